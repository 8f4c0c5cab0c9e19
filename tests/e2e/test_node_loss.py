"""A NATS node lost under load: a three-node JetStream cluster from `infra/nats/` on loopback,
streams and buckets on three replicas, `python -m connector` and `python -m relay` connected
with `NATS_URL` listing all three nodes. While 2,000 inbound events flow to a webhook and 500
signed sends are made, the node leading a stream is SIGKILLed and started again: every event is
delivered, every send answered exactly once, each chat in order, and neither service restarts.

The relay runs on its least-privilege user. The connector and the test run on a `harness` user
added to a copy of the configs: the sim engine's controls (`wa.sim.>`, which stand in for the
WhatsApp network) are no production subject, so no user of `infra/` may use them."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS

from relay.client import RelayClient, RelayError
from tests.conftest import API_KEY_ID, API_SECRET
from tests.integration.test_infra_nats import CONFIGS, PASSWORDS
from tests.processes import ready, service, stack_env
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port, nats_server_binary
from wabus.natsbus import shared_credentials
from wabus.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHATS, PER_CHAT, SENDS = 20, 100, 500
NOTICES = ("deliveries from JetStream went missing", "webhook delivery interrupted")
"""How the relay rode the loss out, counted in its log for the test's output."""


@dataclass
class ClusterNode:
    name: str
    port: int
    monitor_port: int
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def url(self, user: str) -> str:
        if user == "harness":
            password = HARNESS_PASSWORD
        else:
            password = PASSWORDS[f"NATS_{user.upper()}_PASSWORD"]
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"


HARNESS_PASSWORD = "harness-" + os.urandom(8).hex()


def urls(nodes: list[ClusterNode], user: str) -> str:
    return ",".join(node.url(user) for node in nodes)


def configs_with_harness(target: Path) -> Path:
    """`infra/nats/` copied, with a `harness` user (no limits) in the wabus account."""
    target.mkdir()
    for source in CONFIGS.glob("*.conf"):
        (target / source.name).write_text(source.read_text())
    accounts = target / "accounts.conf"
    text = accounts.read_text()
    anchor = "      { user: reader,"
    assert anchor in text, "accounts.conf changed: adapt the harness user"
    harness = f'      {{ user: harness, password: "{HARNESS_PASSWORD}" }}\n'
    accounts.write_text(text.replace(anchor, harness + anchor, 1))
    return target


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    configs = configs_with_harness(tmp_path / "nats-configs")
    route_ports = [free_port() for _ in range(3)]
    routes = {
        f"NATS_ROUTE_{n + 1}": f"nats-route://127.0.0.1:{p}" for n, p in enumerate(route_ports)
    }
    nodes = []
    for number, route_port in enumerate(route_ports):
        name, port = f"n{number + 1}", free_port()
        env = {
            **os.environ,
            **PASSWORDS,
            **routes,
            "NATS_SERVER_NAME": name,
            "NATS_PORT": "0",
            "NATS_HTTP_PORT": "0",
            "NATS_CLUSTER_PORT": str(route_port),
            "NATS_STORE_DIR": str(tmp_path / name),
        }
        monitor_port = free_port()
        command = [nats_server_binary(), "-c", str(configs / "cluster.conf"), "-a", "127.0.0.1"]
        command += ["-p", str(port), "-m", str(monitor_port)]
        nodes.append(ClusterNode(name, port, monitor_port, command, env, tmp_path / f"{name}.log"))
    for node in nodes:
        node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
                node.process.wait(timeout=10)


@pytest.fixture
async def stack(
    cluster: list[ClusterNode], settings: Settings, webhook_secret: str, tmp_path: Path
) -> AsyncIterator[tuple[Receiver, str, NATS, list[subprocess.Popen[bytes]]]]:
    async def all_healthy() -> bool:
        return all([await healthy(node) for node in cluster])

    await eventually(all_healthy, timeout=60, interval=0.2)
    receiver = Receiver(webhook_secret)
    async with running(receiver.app()) as receiver_url:
        base = stack_env(
            settings.model_copy(update={"subject_prefix": "wa"}),
            receiver_url,
            webhook_secret,
            WABUS_ENGINE="sim",
            WABUS_DATA_DIR=str(tmp_path / "data"),
            WABUS_STREAM_REPLICAS="3",
            WABUS_SEND_INTERVAL="0",
        )
        relay_port, connector_port = free_port(), free_port()
        logs = {name: tmp_path / f"{name}.log" for name in ("connector", "relay")}
        servers = urls(cluster, "harness").split(",")
        nc = await nats.connect(servers=servers, **shared_credentials(servers))
        try:
            with (
                service(
                    "connector",
                    base | {"NATS_URL": urls(cluster, "harness"), "PORT": str(connector_port)},
                    logs["connector"],
                ) as connector,
                service(
                    "relay",
                    base | {"NATS_URL": urls(cluster, "relay"), "PORT": str(relay_port)},
                    logs["relay"],
                ) as relay,
            ):
                relay_url = f"http://127.0.0.1:{relay_port}"
                await eventually(lambda: ready(relay_url), timeout=60)
                await eventually(lambda: ready(f"http://127.0.0.1:{connector_port}"), timeout=60)
                yield receiver, relay_url, nc, [connector, relay]
        finally:
            await nc.close()
            for name, path in logs.items():
                if path.exists():
                    lines = path.read_text().splitlines()
                    print(f"--- {name} log (last 60 lines) ---\n" + "\n".join(lines[-60:]))
                    for notice in NOTICES:
                        print(f"{name}: {sum(notice in line for line in lines)} × {notice!r}")
                    print(f"--- {name}: delivery and lease lines ---")
                    print(
                        "\n".join(line for line in lines if "dispatcher" in line or "lease" in line)
                    )


async def healthy(node: ClusterNode) -> bool:
    """The node's own health check: JetStream up and current with the cluster (asked over HTTP,
    so no client connection is left behind by a node that is not up yet)."""
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{node.monitor_port}/healthz", timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


async def leader_of(nc: NATS, stream: str) -> str:
    info = await nc.jetstream().stream_info(stream)
    assert info.cluster is not None
    assert info.cluster.leader is not None
    return info.cluster.leader


async def send_until_accepted(client: RelayClient, number: int, refused: list[float]) -> None:
    """A signed send, made again (same idempotency key, signed anew) while the relay refuses
    it for NATS being away: as a web app retries."""
    while True:
        try:
            await client.send(
                "acme",
                {"to": "5511999999999", "text": f"s-{number}"},
                idempotency_key=f"s-{number}",
            )
            return
        except RelayError as error:
            if error.status != 503:  # only "NATS is away" is retried; anything else is a bug
                raise
            refused.append(time.monotonic())
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("stream", ["WA_EVENTS", "WA_COMMANDS"])
async def test_losing_the_node_that_leads_a_stream_loses_nothing(
    stack: tuple[Receiver, str, NATS, list[subprocess.Popen[bytes]]],
    cluster: list[ClusterNode],
    stream: str,
) -> None:
    receiver, relay_url, nc, services = stack
    async with RelayClient(relay_url, API_KEY_ID, API_SECRET) as client:
        await client.create_instance("acme")

        async def open_() -> bool:
            return bool((await client.status("acme"))["state"] == "open")

        await eventually(open_, timeout=30)
        for chat in range(CHATS):
            inbound = {
                "from": f"55119{chat:08d}", "id": f"C{chat:02d}N", "text": f"{chat}",
                "repeat": PER_CHAT, "interval_ms": 20,
            }  # fmt: skip
            reply = await nc.request("wa.sim.acme.inbound", _json(inbound), timeout=5)
            assert b'"ok": true' in reply.data
        refused: list[float] = []
        semaphore = asyncio.Semaphore(8)

        async def one(number: int) -> None:
            async with semaphore:
                await send_until_accepted(client, number, refused)

        sends = asyncio.gather(*(one(n) for n in range(SENDS)))

        async def under_way() -> bool:
            return len(receiver.events("message.received")) >= 300

        await eventually(under_way, timeout=60)
        leader = await leader_of(nc, stream)
        node = next(n for n in cluster if n.name == leader)
        node.kill()
        await asyncio.sleep(2)
        node.start()
        await sends

        async def all_events() -> bool:
            ids = {e["data"]["message_id"] for e in receiver.events("message.received")}
            return len(ids) >= CHATS * PER_CHAT

        await eventually(all_events, timeout=120, interval=0.5)

        async def all_answers() -> set[str] | None:
            sent = {e["data"]["command_id"] for e in receiver.events("message.sent")}
            return sent if len(sent) >= SENDS else None

        answered = await eventually(all_answers, timeout=120, interval=0.5)
        network = await nc.request("wa.sim.acme.sent", b"{}", timeout=10)
    texts = [entry["data"]["text"] for entry in _loads(network.data)["sent"]]
    assert sorted(texts) == sorted(f"s-{n}" for n in range(SENDS)), "a send lost or sent twice"
    assert answered == {f"s-{n}" for n in range(SENDS)}
    assert not [e for e in receiver.events("message.failed")], "a send failed"
    # each chat in order: the first delivery of each event, numbered within its chat
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for event in receiver.events("message.received"):
        message_id = event["data"]["message_id"]
        if message_id not in seen:
            seen.add(message_id)
            firsts[message_id[:4]].append(int(message_id[4:]))
    assert len(firsts) == CHATS
    assert all(len(numbers) == PER_CHAT for numbers in firsts.values())
    assert all(process.poll() is None for process in services), "a service restarted"
    assert receiver.rejected == []
    disordered = [prefix for prefix, numbers in firsts.items() if numbers != sorted(numbers)]
    assert not disordered, (
        f"chats out of order: {disordered}; the first: {_runs(firsts[disordered[0]])}"
    )
    arrivals = receiver.times
    pause = max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)
    print(
        f"{stream} leader {leader} killed: longest pause between webhooks {pause:.1f} s; "
        f"{len(refused)} sends refused with 503"
        + (f" over {refused[-1] - refused[0]:.1f} s" if refused else "")
    )


def _runs(numbers: list[int]) -> str:
    """`0-16, 53-96, 17-52`: the order of arrival, as runs of consecutive numbers."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def _loads(data: bytes) -> Any:
    import json

    return json.loads(data)
