"""The services as separate processes (`python -m connector`, `python -m relay`), for the tests
that kill, restart or run several of them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import API_KEY_ID, API_SECRET
from wabus.settings import Settings


@contextmanager
def service(module: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m <module>` with `env`, its output appended to `log`; stopped (SIGTERM, then
    SIGKILL after 20 s) on the way out unless it ended already."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def ready(url: str) -> bool:
    """True once the service at `url` answers `/readyz` with 200."""
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(url + "/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


def stack_env(
    settings: Settings, receiver_url: str, webhook_secret: str, **extra: str
) -> dict[str, str]:
    """The environment of services that share the test's NATS and prefix, sign with the test's
    API key and deliver webhooks to the test's receiver (on loopback, so allowed); `extra`
    adds or overrides variables (`WABUS_ENGINE="sim"`, …)."""
    return {
        **os.environ,
        "NATS_URL": str(settings.nats_url),
        "WABUS_SUBJECT_PREFIX": settings.subject_prefix,
        "WABUS_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "WABUS_WEBHOOK_URL": receiver_url + "/hook",
        "WABUS_WEBHOOK_SECRET": webhook_secret,
        "WABUS_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
        "WABUS_HOST": "127.0.0.1",
        "LOG_FORMAT": "console",
        **extra,
    }
