"""The commands that talk to NATS (`wabus tail`, `wabus sim`, `wabus dev` given a `NATS_URL`) as
NATS comes and goes: a restart is ridden out with one line each way, NATS not there is one line
saying what to run — never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from schemas.envelope import encode, make_event
from schemas.events import ConnectionPairCode
from schemas.subjects import Topology
from tests.cli_support import (
    clean_env,
    dev_options,
    press_ctrl_c,
    run_wabus,
    wabus_process,
    wait_for_text,
)
from wabus.embedded import EmbeddedNats, free_port
from wabus_cli.failures import ExitCode


async def publish(url: str, code: str) -> None:
    """One event, published the way the connector does, carrying `code` to find it by."""
    event = make_event("acme", ConnectionPairCode(code=code, phone="5511999999999"))
    nc = await nats.connect(url)
    try:
        await nc.publish(Topology("wa").event("acme", event.type), encode(event))
        await nc.flush()
    finally:
        await nc.close()


async def test_tail_rides_out_a_nats_restart_with_one_line_each_way(tmp_path: Path) -> None:
    store, port = tmp_path / "nats", free_port()
    server = EmbeddedNats(store, port=port).start()
    log = tmp_path / "tail.log"
    try:
        env = clean_env(tmp_path / ".wabus", NATS_URL=server.url)
        with wabus_process(["tail", "--json"], env, log) as tail:
            wait_for_text(log, "following")
            await publish(server.url, "BEFORE-01")
            wait_for_text(log, "BEFORE-01")

            server.stop()
            wait_for_text(log, "went away")
            server = EmbeddedNats(store, port=port).start()
            wait_for_text(log, "is back")

            await publish(server.url, "AFTER-002")  # the control: it follows again
            wait_for_text(log, "AFTER-002")
            press_ctrl_c(tail)
            tail.wait(timeout=20)
    finally:
        server.stop()
    lines = log.read_text().splitlines()
    assert tail.returncode == 0
    kinds = ["event" if line.startswith("{") else line.split(" ")[0] for line in lines]
    assert kinds == ["following", "event", "…", "…", "event"], lines
    assert lines[2] == f"… NATS at {server.url} went away: reconnecting (Ctrl-C to stop)"
    assert lines[3] == f"… NATS at {server.url} is back"
    assert [json.loads(line)["data"]["code"] for line in (lines[1], lines[4])] == [
        "BEFORE-01",
        "AFTER-002",
    ]


NATS_HINT = "start it, or set NATS_URL to one that runs"


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["tail"], NATS_HINT),
        (["sim", "inbound", "default", "--from", "5511999999999", "--text", "hi"], NATS_HINT),
        (["dev", *dev_options()], "start it, or unset NATS_URL (wabus dev then runs its own)"),
    ],
    ids=["tail", "sim", "dev"],
)
def test_with_nats_down_one_line_says_what_to_run(
    args: list[str], hint: str, tmp_path: Path
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    down = run_wabus(*args, env=clean_env(tmp_path / ".wabus", NATS_URL=url))
    assert down.returncode == ExitCode.UNREACHABLE
    assert down.stdout == ""
    [said] = down.stderr.splitlines()
    assert said.startswith(f"✘ NATS at {url} does not answer (")
    assert said.endswith(hint)
    # the controls (NATS up, the same command works): the restart test above for `tail`,
    # test_cli_dev.py for `sim inbound` and `dev`
