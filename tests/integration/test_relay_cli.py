"""The `wabus` API subcommands, run as processes against a real relay and nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from relay.app import create_app
from tests.conftest import API_KEY_ID, API_SECRET
from tests.relay_helpers import last_command, write_status
from tests.support import running
from wabus.settings import Settings


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings)) as base:
        yield base


async def wabus(url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = os.environ | {
        "WABUS_RELAY_URL": url,
        "WABUS_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "WABUS_DATA_DIR": str(tmp_path / "cli"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from wabus_cli.main import main; main()", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_instances_status_qr_send_and_delete(
    url: str, nc: NATS, settings: Settings, tmp_path: Path
) -> None:
    code, out, _ = await wabus(
        url, tmp_path, "instances", "create", "acme", "--webhook", "https://example.com/h",
        "--events", "message.*",
    )  # fmt: skip
    assert code == 0
    created = json.loads(out)
    assert created["webhooks"][0]["secret"].startswith("whsec_")
    assert created["webhooks"][0]["events"] == ["message.*"]

    code, out, _ = await wabus(url, tmp_path, "instances", "list")
    assert [i["id"] for i in json.loads(out)] == ["acme"]

    await write_status(nc, settings, "acme", state="qr", qr="2@cli-test-payload")
    code, out, _ = await wabus(url, tmp_path, "status", "acme")
    assert json.loads(out)["state"] == "qr"
    png = tmp_path / "qr.png"
    code, out, _ = await wabus(url, tmp_path, "qr", "acme", "--png", str(png))
    assert code == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    code, out, _ = await wabus(url, tmp_path, "qr", "acme")
    assert code == 0
    assert len(out.splitlines()) > 10  # the QR drawn in the terminal

    code, out, _ = await wabus(url, tmp_path, "send", "acme", "5511999999999", "hi from cli")
    assert code == 0
    command = await last_command(nc, settings, "acme", "send")
    assert command["id"] == json.loads(out)["command_id"]
    assert command["data"]["text"] == "hi from cli"

    code, out, _ = await wabus(url, tmp_path, "instances", "stop", "acme")
    assert (code, json.loads(out)["desired_state"]) == (0, "stopped")
    code, out, _ = await wabus(url, tmp_path, "instances", "delete", "acme")
    assert (code, out.strip()) == (0, "deleted acme")
    code, _, err = await wabus(url, tmp_path, "status", "acme")
    assert code == 1
    assert "unknown_instance" in err
