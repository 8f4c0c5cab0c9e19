"""`wabus dev`, `wabus tail` and `wabus keys new` as a new user runs them: real processes, real
nats-server; the dev console's QR and phone pairing against a real NATS."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.aio.client import Client as NATS
from standardwebhooks import Webhook
from typer.testing import CliRunner

from schemas.envelope import encode, make_event
from schemas.events import ConnectionPairCode, ConnectionQR
from tests.support import eventually, stored_envelopes
from wabus.cli import app
from wabus.devstack import DevConsole
from wabus.embedded import free_port
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

WABUS = str(Path(sys.executable).parent / "wabus")


def test_keys_new_prints_a_usable_api_key_and_webhook_secret() -> None:
    result = CliRunner().invoke(app, ["keys", "new", "--key-id", "prod"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split("=", 1) for line in result.output.splitlines())
    settings = Settings(
        api_keys=lines["WABUS_API_KEYS"], webhook_secret=lines["WABUS_WEBHOOK_SECRET"]
    )
    assert list(settings.keys) == ["prod"]
    assert lines["WABUS_WEBHOOK_SECRET"].startswith("whsec_")
    Webhook(lines["WABUS_WEBHOOK_SECRET"])  # the official library accepts the secret


@contextmanager
def cli(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [WABUS, *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_dev_shows_progress_then_the_banner_and_tail_follows_it(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WABUS_", "NATS_"))},
        "WABUS_DATA_DIR": str(tmp_path / ".wabus"),
        "PYTHONUNBUFFERED": "1",
    }
    ports = [str(free_port()) for _ in range(4)]
    options = ["--relay-port", ports[0], "--connector-port", ports[1]]
    options += ["--inspector-port", ports[2], "--nats-port", ports[3]]
    dev_log, tail_log = tmp_path / "dev.log", tmp_path / "tail.log"
    with cli(["dev", *options], env, dev_log):

        async def banner() -> bool:
            return "wabus dev is running" in dev_log.read_text()

        await eventually(banner, timeout=60, interval=0.1)
        shown = dev_log.read_text()
        assert shown.index("starting nats-server") < shown.index("wabus dev is running")
        assert "wabus tail" in shown
        with cli(["tail", "default", "--type", "message.*"], env, tail_log):

            async def following() -> bool:
                return "following" in tail_log.read_text()

            await eventually(following, timeout=20, interval=0.1)
            inbound = ["sim", "inbound", "default", "--from", "5511999999999", "--text", "oi"]
            done = subprocess.run(
                [WABUS, *inbound],
                env=env, capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr

            async def tailed() -> bool:
                return "message.received" in tail_log.read_text()

            await eventually(tailed, timeout=20, interval=0.1)
            assert "5511999999999@s.whatsapp.net: 'oi'" in tail_log.read_text()
    assert "verified" in dev_log.read_text(), "the inspector got the webhook"


async def test_dev_console_shows_the_qr_and_pairs_by_phone(nc: NATS, settings: Settings) -> None:
    js = nc.jetstream()
    await ensure_streams(js, settings)
    lines: list[str] = []
    console = DevConsole(nc, settings, lines.append, phone="+55 11 99999-9999")
    await console.start()

    expires = datetime.now(UTC) + timedelta(seconds=20)
    qr = make_event("acme", ConnectionQR(qr="2@" + "x" * 60, expires_at=expires, refresh=0))
    await nc.publish(settings.topology.event("acme", "connection.qr"), encode(qr))

    async def pair_requested() -> list[dict[str, object]]:
        envelopes = await stored_envelopes(js, settings.topology.commands_stream)
        return [e for e in envelopes if e["type"] == "pair_phone"]

    commands = await eventually(pair_requested)
    assert commands[0]["instance"] == "acme"
    assert commands[0]["data"] == {"phone": "5511999999999"}

    code = make_event("acme", ConnectionPairCode(code="WXYZ-1234", phone="5511999999999"))
    await nc.publish(settings.topology.event("acme", "connection.pair_code"), encode(code))

    async def code_shown() -> bool:
        return any("WXYZ-1234" in line for line in lines)

    await eventually(code_shown)
    assert any("pairing code for +" in line for line in lines)

    # a second QR (a refresh) is drawn, and does not ask for another code
    again = make_event("acme", ConnectionQR(qr="2@" + "y" * 60, expires_at=expires, refresh=1))
    await nc.publish(settings.topology.event("acme", "connection.qr"), encode(again))

    async def qr_drawn() -> bool:
        return any("Linked devices" in line for line in lines)

    await eventually(qr_drawn)
    await asyncio.sleep(0.2)
    assert len(await pair_requested()) == 1
    assert json.dumps(lines, ensure_ascii=False).count("█") + "".join(lines).count("▀") > 0
