"""The services as separate processes (`python -m connector`, `python -m relay`), for the tests
that kill, restart or run several of them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


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
