"""The `wabus` API commands as a new user meets their failures: the relay down, a request refused
or invalid, a send that failed — each said in plain lines with a non-zero exit, never a traceback.
Real processes against a real `wabus dev` (relay, connector on the sim engine, nats-server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from relay.webhooks.signature import new_secret
from schemas.sim import FAIL_NEXT_SENDS
from schemas.subjects import Topology
from tests.cli_support import DevStack, clean_env, dev_stack, run_wabus
from wabus.embedded import free_port
from wabus_cli.devstate import DevState, load_dev_state, save_dev_state
from wabus_cli.failures import ExitCode

PHONE = "5511999999999"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with dev_stack(tmp_path_factory.mktemp("cli")) as running:
        yield running


def stale_dev_folder(folder: Path) -> dict[str, str]:
    """A folder whose `wabus dev` has stopped: dev.json names a relay no one serves."""
    data_dir = folder / ".wabus"
    state = DevState(
        api_key="dev:" + "k" * 32,
        webhook_secret=new_secret(),
        relay_url=f"http://127.0.0.1:{free_port()}",
        nats_url=f"nats://127.0.0.1:{free_port()}",
    )
    save_dev_state(data_dir, state)
    return clean_env(data_dir)


REQUESTS = [
    ["send", "default", PHONE, "hello"],
    ["status", "default"],
    ["qr", "default"],
]


@pytest.mark.parametrize("args", REQUESTS, ids=lambda args: args[0])
def test_with_the_relay_down_one_line_says_what_to_run(
    args: list[str], tmp_path: Path, stack: DevStack
) -> None:
    env = stale_dev_folder(tmp_path)
    state = load_dev_state(Path(env["WABUS_DATA_DIR"]))
    assert state is not None

    down = run_wabus(*args, env=env)

    assert down.returncode == ExitCode.UNREACHABLE
    assert down.stdout == ""
    [said] = down.stderr.splitlines()
    assert said.startswith(f"✘ the relay at {state.relay_url} does not answer")
    assert "start it with `wabus dev`" in said
    assert "WABUS_RELAY_URL" in said

    # told where the relay is, the hint is about that setting instead
    elsewhere = run_wabus(*args, env=env | {"WABUS_RELAY_URL": state.relay_url})
    assert elsewhere.returncode == ExitCode.UNREACHABLE
    [said] = elsewhere.stderr.splitlines()
    assert said.endswith("start it, or set WABUS_RELAY_URL to one that runs")

    # the control: the same command reaches a running relay (`qr` of an open session is refused
    # by the relay itself, with its reason: it got there)
    up = run_wabus(*args, env=stack.env)
    if args[0] == "qr":
        assert up.returncode == ExitCode.FAILED
        assert "(qr_unavailable)" in up.stderr
    else:
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)


def test_without_any_relay_configured_it_says_how_to_get_one(tmp_path: Path) -> None:
    done = run_wabus("status", "default", env=clean_env(tmp_path / ".wabus"))
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.splitlines() == [
        "✘ no relay to talk to: start `wabus dev` in this folder, "
        "or set WABUS_RELAY_URL and WABUS_API_KEYS"
    ]


def test_a_refused_request_exits_1_with_the_apis_problem(stack: DevStack) -> None:
    refused = run_wabus("status", "nope", env=stack.env)
    assert refused.returncode == ExitCode.FAILED
    assert refused.stdout == ""
    title, request_id = refused.stderr.splitlines()
    assert title == "✘ the relay refused: 404 Not Found (unknown_instance): no instance 'nope'"
    assert request_id.strip().startswith("request id: ")

    answered = run_wabus("status", "default", env=stack.env)  # the control
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["state"] == "open"


def test_an_invalid_send_exits_1_naming_each_field_and_its_rule(stack: DevStack) -> None:
    invalid = run_wabus("send", "default", "+55 not a phone", "", env=stack.env)
    assert invalid.returncode == ExitCode.FAILED
    said = invalid.stderr.splitlines()
    assert said[0] == "✘ the relay refused: 422 Unprocessable Entity (invalid_body)"
    fields = {line.strip().partition(":")[0]: line.strip() for line in said[1:]}
    assert fields["to"].startswith("to: expected a phone number in international format")
    assert fields["to"].endswith("[value_error]")
    assert fields["text"] == "text: String should have at least 1 character  [string_too_short]"

    valid = run_wabus("send", "default", PHONE, "fine", env=stack.env)  # the control
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout)["status"] == "accepted"


async def fail_next_send(stack: DevStack, code: str) -> None:
    """Ask the sim engine to fail the next send with `code`."""
    state = load_dev_state(stack.data_dir)
    assert state is not None
    nc = await nats.connect(state.nats_url)
    try:
        payload = json.dumps({"count": 1, "code": code}).encode()
        subject = Topology(state.subject_prefix).sim("default", FAIL_NEXT_SENDS)
        answer = await nc.request(subject, payload, timeout=10)
        assert json.loads(answer.data) == {"ok": True}
    finally:
        await nc.close()


async def test_a_send_that_failed_under_wait_exits_1_with_its_reason(stack: DevStack) -> None:
    await fail_next_send(stack, "sim_refused")
    failed = await asyncio.to_thread(
        run_wabus, "send", "default", PHONE, "will fail", "--wait", "20", env=stack.env
    )
    assert failed.returncode == ExitCode.FAILED
    answer = json.loads(failed.stdout)
    assert (answer["status"], answer["error_code"]) == ("failed", "sim_refused")
    assert failed.stderr.splitlines() == [
        "✘ the send failed: sim_refused: failed by the sim engine on request"
    ]

    sent = await asyncio.to_thread(  # the control: the next one goes through
        run_wabus, "send", "default", PHONE, "will work", "--wait", "20", env=stack.env
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["status"] == "sent"
    assert sent.stderr == ""
