"""The Next.js example, for real: `npm ci`, `next build`, `next start`, against nats-server,
`python -m connector` (sim engine) and `python -m relay` as processes.

npm's cache and the build stay inside `examples/nextjs/` (ignored by git). `npm ci` and
`next build` are skipped when a stamp shows the lockfile (sources) unchanged since the last run.
When node/npm is missing or the npm registry cannot be reached, the tests are skipped with that
reason: they never pass without having run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from standardwebhooks import Webhook

from relay.auth import AuthError, sign_request_v2, verify_request
from schemas.instances import InstanceConfig
from tests.conftest import API_KEY_ID, API_SECRET
from tests.connector_support import state_is
from tests.support import eventually
from wabus.buckets import open_instance_buckets
from wabus.embedded import free_port
from wabus.settings import ApiKey, Settings

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parents[2] / "examples" / "nextjs"
NETWORK_ERRORS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
)
SEND_TOKEN = "example-send-token"


def _node_env() -> dict[str, str]:
    return {
        **os.environ,
        "NEXT_TELEMETRY_DISABLED": "1",
        "npm_config_cache": str(APP / ".npm-cache"),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }


def _node() -> str:
    return shutil.which("node") or "node"


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            sha.update(str(file.relative_to(APP)).encode() + b"\0" + file.read_bytes())
    return sha.hexdigest()


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=APP, env=_node_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """`npm ci` from the committed lockfile (once per lockfile change)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed for the Next.js tests and are not installed")
    stamp = APP / "node_modules" / ".wabus-lock-sha256"
    wanted = _digest(APP / "package-lock.json")
    if not (stamp.exists() and stamp.read_text() == wanted):
        done = _run(
            [shutil.which("npm") or "npm", "ci", "--loglevel=error", "--no-audit", "--no-fund"],
            300,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            if any(code in output for code in NETWORK_ERRORS):
                pytest.skip(f"npm registry unreachable, Next.js tests not run: {output[-500:]}")
            pytest.fail(f"npm ci failed:\n{output[-3000:]}")
        stamp.write_text(wanted)
    return APP / "node_modules"


@pytest.fixture(scope="session")
def nextjs_build(node_modules: Path) -> Path:
    """`next build` (once per source change)."""
    stamp = APP / ".next" / ".wabus-source-sha256"
    sources = [
        APP / name
        for name in ("app", "lib", "next.config.mjs", "tsconfig.json", "package-lock.json")
    ]
    wanted = _digest(*sources)
    if not (stamp.exists() and stamp.read_text() == wanted):
        done = _run([str(node_modules / ".bin" / "next"), "build"], 300)
        if done.returncode != 0:
            pytest.fail(f"next build failed:\n{(done.stdout + done.stderr)[-3000:]}")
        stamp.write_text(wanted)
    return APP / ".next"


# --- the TypeScript signer against the Python verifier ------------------------------------------

SIGN_SCRIPT = """
const fs = require("node:fs");
const ts = require("typescript");
const source = fs.readFileSync(process.argv[1], "utf8");
const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS } });
const module_ = { exports: {} };
new Function("require", "module", "exports", js.outputText)(require, module_, module_.exports);
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(cases.map((c) => module_.exports.wabusHeaders(c))));
"""


def test_typescript_signer_agrees_with_the_relay_verifier(node_modules: Path) -> None:
    cases: list[dict[str, Any]] = [
        {
            "method": "POST",
            "target": "/v1/instances/acme/messages",
            "body": '{"to":"1","text":"hi"}',
        },
        {
            "method": "post",
            "target": "/v1/instances/acme/messages?wait=5",
            "body": '{"text":"olá 👋"}',
        },
        {"method": "GET", "target": "/v1/instances/acme/status", "body": ""},
        {"method": "DELETE", "target": "/v1/instances/a-b_c", "body": "x" * 70_000},
        {
            "method": "POST",
            "target": "/v1/instances/acme/messages",
            "body": '{"to":"1","text":"hi"}',
            "idempotencyKey": "order-42",
        },
    ]
    for number, case in enumerate(cases):
        case.update(keyId=API_KEY_ID, secret=API_SECRET, timestamp=1_760_000_000 + number)
    done = subprocess.run(
        [_node(), "-e", SIGN_SCRIPT, str(APP / "lib" / "wabus" / "signer.ts")],
        cwd=APP, input=json.dumps(cases), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    signed: list[dict[str, str]] = json.loads(done.stdout)
    keys = {API_KEY_ID: ApiKey(API_KEY_ID, API_SECRET)}

    for case, headers in zip(cases, signed, strict=True):
        lower = {name.lower(): value for name, value in headers.items()}
        body = case["body"].encode()
        now = float(case["timestamp"])
        verified = verify_request(keys, lower, case["method"].upper(), case["target"], body, now)
        key = case.get("idempotencyKey")
        assert lower.get("idempotency-key") == key
        expected = sign_request_v2(
            API_SECRET.encode(), case["timestamp"], case["method"], case["target"], key, body
        )
        assert verified.signature == expected == lower["x-wabus-signature"]
        assert verified.covers_idempotency_key
        with pytest.raises(AuthError, match="does not match"):
            verify_request(keys, lower, case["method"].upper(), case["target"], body + b" ", now)
        other_key = lower | {"idempotency-key": "another"}
        with pytest.raises(AuthError, match="does not match"):
            verify_request(keys, other_key, case["method"].upper(), case["target"], body, now)


def test_typescript_types_match_the_committed_json_schemas(
    node_modules: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "types.ts"
    done = subprocess.run(
        [_node(), "scripts/gen-types.mjs"],
        cwd=APP, env=_node_env() | {"WABUS_TYPES_OUT": str(fresh)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    committed = (APP / "lib" / "wabus" / "types.ts").read_text()
    assert fresh.read_text() == committed, (
        "examples/nextjs/lib/wabus/types.ts is stale: run `npm run gen:types` in examples/nextjs"
    )
    assert "export type WabusEvent =" in committed
    assert 'type: "message.received";' in committed


# --- the whole path -----------------------------------------------------------------------------


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> Iterator[None]:
    with log.open("wb") as output:
        child = subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    nextjs: str
    relay: str


@pytest.fixture
async def stack(
    nextjs_build: Path, settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    next_port, relay_port, connector_port = free_port(), free_port(), free_port()
    nextjs, relay = f"http://127.0.0.1:{next_port}", f"http://127.0.0.1:{relay_port}"
    services = {
        **os.environ,
        "NATS_URL": str(settings.nats_url),
        "WABUS_SUBJECT_PREFIX": settings.subject_prefix,
        "WABUS_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "WABUS_WEBHOOK_URL": nextjs + "/api/whatsapp",
        "WABUS_WEBHOOK_SECRET": webhook_secret,
        "WABUS_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
        "WABUS_ENGINE": "sim",
        "WABUS_HOST": "127.0.0.1",
        "WABUS_DATA_DIR": str(tmp_path / "data"),
    }
    app_env = _node_env() | {
        "WABUS_WEBHOOK_SECRET": webhook_secret,
        "WABUS_RELAY_URL": relay,
        "WABUS_API_KEY": f"{API_KEY_ID}:{API_SECRET}",
        "EXAMPLE_SEND_TOKEN": SEND_TOKEN,
    }
    next_bin = str(APP / "node_modules" / ".bin" / "next")
    logs = {name: tmp_path / f"{name}.log" for name in ("nextjs", "connector", "relay")}
    next_start = [next_bin, "start", "-H", "127.0.0.1", "-p", str(next_port)]
    connector_env = services | {"PORT": str(connector_port)}
    with (
        process(next_start, app_env, logs["nextjs"], APP),
        process([sys.executable, "-m", "connector"], connector_env, logs["connector"]),
        process(
            [sys.executable, "-m", "relay"], services | {"PORT": str(relay_port)}, logs["relay"]
        ),
    ):
        try:
            await eventually(lambda: answers(nextjs + "/api/whatsapp/status"), timeout=30)
            await eventually(lambda: answers(relay + "/readyz"), timeout=30)
            await eventually(
                lambda: answers(f"http://127.0.0.1:{connector_port}/readyz"), timeout=30
            )
            yield Stack(nextjs, relay)
        finally:
            for name, log in logs.items():
                print(f"--- {name} log ---\n" + log.read_text())


async def create_instance(nc: NATS, settings: Settings, instance: str) -> None:
    """What the relay's create route does: an InstanceConfig in the config bucket."""
    kv = (await open_instance_buckets(nc.jetstream(), settings.topology)).config
    now = datetime.now(UTC)
    config = InstanceConfig(id=instance, created_at=now, updated_at=now)
    await kv.put(instance, config.model_dump_json().encode())
    await eventually(lambda: state_is(nc, settings.topology, instance, "open"), timeout=20)


async def sim_sends(nc: NATS, settings: Settings, instance: str) -> list[dict[str, Any]]:
    answer = await nc.request(settings.topology.sim(instance, "sent"), b"{}", timeout=5)
    result = json.loads(answer.data)
    assert result["ok"], result
    sent: list[dict[str, Any]] = result["sent"]
    return sent


async def test_nextjs_verifies_the_webhook_and_its_reply_reaches_whatsapp(
    stack: Stack, nc: NATS, settings: Settings
) -> None:
    await create_instance(nc, settings, "acme")
    inbound = {"from": "5511999999999", "text": "olá from the test"}
    answer = await nc.request(
        settings.topology.sim("acme", "inbound"), json.dumps(inbound).encode(), timeout=5
    )
    assert json.loads(answer.data) == {"ok": True}

    async def verified_by_nextjs() -> dict[str, Any] | None:
        async with httpx.AsyncClient() as http:
            status: dict[str, Any] = (await http.get(stack.nextjs + "/api/whatsapp/status")).json()
        received = [e for e in status["recent"] if e["type"] == "message.received"]
        return status if received and status["replies"] >= 1 else None

    status = await eventually(verified_by_nextjs, timeout=30)
    assert status["rejected"] == 0
    assert [e["instance"] for e in status["recent"] if e["type"] == "message.received"] == ["acme"]

    async def echoed() -> list[dict[str, Any]]:
        sends = await sim_sends(nc, settings, "acme")
        return [s for s in sends if s["data"].get("text") == "echo: olá from the test"]

    echoes = await eventually(echoed, timeout=30)
    assert echoes[0]["data"]["to"] == "5511999999999@s.whatsapp.net"

    async def sent_event_verified() -> bool:
        async with httpx.AsyncClient() as http:
            status = (await http.get(stack.nextjs + "/api/whatsapp/status")).json()
        return any(e["type"] == "message.sent" for e in status["recent"])

    await eventually(sent_event_verified, timeout=30)
    assert len(await echoed()) == 1, "the reply was sent more than once"


async def test_nextjs_refuses_forged_webhooks_and_skips_redeliveries(
    stack: Stack, webhook_secret: str
) -> None:
    body = json.dumps(
        {"id": "evt_e2e_1", "type": "presence.chat", "instance": "acme",
         "timestamp": "2026-11-25T12:00:00Z", "data": {"chat": "c", "state": "composing"}}
    )  # fmt: skip
    now = datetime.now(UTC)
    signature = Webhook(webhook_secret).sign("evt_e2e_1", now, body)
    headers = {
        "webhook-id": "evt_e2e_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    hook = stack.nextjs + "/api/whatsapp"
    async with httpx.AsyncClient() as http:
        forged = await http.post(hook, content=body.replace("composing", "paused"), headers=headers)
        first = await http.post(hook, content=body, headers=headers)
        again = await http.post(hook, content=body, headers=headers)
        status = (await http.get(stack.nextjs + "/api/whatsapp/status")).json()
    assert forged.status_code == 400
    assert first.status_code == 200
    assert first.json() == {"ok": True}
    assert again.status_code == 200
    assert again.json() == {"duplicate": True}
    assert (status["rejected"], status["duplicates"]) == (1, 1)


async def test_nextjs_sends_through_the_relay_with_its_signer(
    stack: Stack, nc: NATS, settings: Settings
) -> None:
    await create_instance(nc, settings, "acme")
    request = {"instance": "acme", "to": "5511888888888", "text": "sent from Next.js"}
    async with httpx.AsyncClient() as http:
        refused = await http.post(stack.nextjs + "/api/send", json=request)
        accepted = await http.post(
            stack.nextjs + "/api/send",
            json=request,
            headers={"authorization": f"Bearer {SEND_TOKEN}"},
        )
    assert refused.status_code == 401
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "accepted"

    async def delivered() -> list[dict[str, Any]]:
        sends = await sim_sends(nc, settings, "acme")
        return [s for s in sends if s["data"].get("text") == "sent from Next.js"]

    sends = await eventually(delivered, timeout=30)
    assert sends[0]["data"]["to"] == "5511888888888"
