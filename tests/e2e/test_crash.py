"""Kill the connector (SIGKILL) while commands are in flight, start it again: no command is lost
and none is sent twice. The connector runs as `python -m connector`; what the sim "network"
received is kept on disk by the sim engine, as WhatsApp keeps what it was sent."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from connector.sends import OUTCOME_UNKNOWN, SendLedger
from schemas.instances import SendRecord, SendState
from tests import connector_support as cs
from tests.processes import ready, service
from tests.support import eventually
from wabus.embedded import free_port
from wabus.settings import Settings

pytestmark = pytest.mark.e2e

COMMANDS = 40


async def records(nc: NATS, settings: Settings) -> dict[str, SendRecord]:
    ledger = SendLedger(nc.jetstream(), settings.topology)
    found = {}
    for number in range(COMMANDS):
        record = await ledger.get("acme", f"k-{number}")
        if record is not None:
            found[record.command_id] = record
    return found


async def sent_at_least(nc: NATS, settings: Settings, number: int) -> bool:
    found = await records(nc, settings)
    return sum(r.state is SendState.SENT for r in found.values()) >= number


async def all_final(nc: NATS, settings: Settings) -> dict[str, SendRecord] | None:
    found = await records(nc, settings)
    final = {SendState.SENT, SendState.FAILED}
    done = len(found) == COMMANDS and all(r.state in final for r in found.values())
    return found if done else None


async def test_sigkill_with_commands_in_flight_loses_none_and_sends_none_twice(
    settings: Settings, nc: NATS, tmp_path: Path
) -> None:
    topology = settings.topology
    env = {
        **os.environ,
        "NATS_URL": str(settings.nats_url),
        "WABUS_SUBJECT_PREFIX": settings.subject_prefix,
        "WABUS_ENGINE": "sim",
        "WABUS_HOST": "127.0.0.1",
        "WABUS_DATA_DIR": str(tmp_path / "data"),
        "WABUS_SEND_INTERVAL": "0.05",
        "WABUS_SEND_JITTER": "0",
        "WABUS_COMMAND_ACK_WAIT": "2",
        "LOG_FORMAT": "console",
    }
    log = tmp_path / "connector.log"
    try:
        first_port = free_port()
        with service("connector", env | {"PORT": str(first_port)}, log) as first:
            await eventually(lambda: ready(f"http://127.0.0.1:{first_port}"), timeout=30)
            await cs.create_instance(nc, topology, "acme")
            await eventually(lambda: cs.state_is(nc, topology, "acme", "open"), timeout=20)
            for number in range(COMMANDS):
                data = {"to": "5511999999999", "text": f"k-{number}"}
                await cs.publish_command(nc, topology, "acme", f"k-{number}", data)
            await eventually(lambda: sent_at_least(nc, settings, 8), timeout=20)
            first.send_signal(signal.SIGKILL)
            first.wait()
        unfinished = COMMANDS - sum(
            r.state is SendState.SENT for r in (await records(nc, settings)).values()
        )
        assert unfinished > 0  # the kill really happened with commands in flight

        second_port = free_port()
        with service("connector", env | {"PORT": str(second_port)}, log):
            await eventually(lambda: ready(f"http://127.0.0.1:{second_port}"), timeout=30)
            final = await eventually(lambda: all_final(nc, settings), timeout=40)
            network = (await cs.sim(nc, topology, "acme", "sent"))["sent"]
            answers = await eventually(lambda: _answers(nc, settings), timeout=20)
            await eventually(lambda: _drained(nc, settings), timeout=20)
    finally:
        print(log.read_text())

    texts = [entry["data"]["text"] for entry in network]
    assert len(texts) == len(set(texts)), "a command was sent twice"
    by_text = {entry["data"]["text"]: entry["message_id"] for entry in network}
    for number in range(COMMANDS):
        record = final[f"k-{number}"]
        if record.state is SendState.SENT:
            assert by_text[f"k-{number}"] == record.message_id
        else:  # only the crash window may end like this, and never in a second send
            assert record.error_code == OUTCOME_UNKNOWN
    assert sum(r.state is SendState.FAILED for r in final.values()) <= 1
    assert set(answers) == {f"k-{number}" for number in range(COMMANDS)}  # none lost


async def _answers(nc: NATS, settings: Settings) -> set[str] | None:
    sent = await cs.events_of(nc, settings.topology, "message.sent")
    failed = await cs.events_of(nc, settings.topology, "message.failed")
    ids = {e["data"]["command_id"] for e in sent + failed}
    return ids if len(ids) >= COMMANDS else None


async def _drained(nc: NATS, settings: Settings) -> bool:
    info = await nc.jetstream().stream_info(settings.topology.commands_stream)
    return info.state.messages == 0
