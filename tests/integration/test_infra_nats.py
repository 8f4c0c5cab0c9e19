"""The NATS configs of `infra/nats/`, run for real: a three-node JetStream cluster on loopback whose
streams come up with three replicas, and the least-privilege users, each doing what its service
does and refused what it must not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from connector.service import run_connector
from relay.app import create_app
from relay.client import RelayClient, RelayError
from schemas.envelope import encode, make_event
from schemas.events import MessageKind, MessageReceived
from tests.conftest import API_KEY_ID, API_SECRET
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port, nats_server_binary
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "nats"
PASSWORDS = {
    "NATS_CONNECTOR_PASSWORD": "connector-" + secrets.token_hex(8),
    "NATS_RELAY_PASSWORD": "relay-" + secrets.token_hex(8),
    "NATS_READER_PASSWORD": "reader-" + secrets.token_hex(8),
}


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, user: str) -> str:
        password = PASSWORDS[f"NATS_{user.upper()}_PASSWORD"]
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"


@contextlib.contextmanager
def nats_nodes(configs: list[tuple[str, dict[str, str]]], tmp: Path) -> Iterator[list[Node]]:
    nodes: list[Node] = []
    try:
        for number, (config, env) in enumerate(configs):
            log = tmp / f"nats-{number}.log"
            port = free_port()
            command = [nats_server_binary(), "-c", str(CONFIGS / config), "-a", "127.0.0.1"]
            command += ["-p", str(port), "-m", str(free_port()), "-l", str(log)]
            with (tmp / f"nats-{number}.stderr").open("wb") as stderr:
                process = subprocess.Popen(
                    command, env={**os.environ, **PASSWORDS, **env}, stderr=stderr
                )
            nodes.append(Node(port, process, log))
        yield nodes
    finally:
        for node in nodes:
            node.process.terminate()
        for node in nodes:
            node.process.wait(timeout=10)


async def jetstream_ready(url: str) -> bool:
    """True once the node answers JetStream requests (in a cluster: once a meta leader exists)."""
    address = url.rpartition("@")[2].split(":")
    try:
        _, writer = await asyncio.open_connection(address[0], int(address[1]))
        writer.close()
        await writer.wait_closed()
    except OSError:
        return False
    try:
        nc = await nats.connect(url, max_reconnect_attempts=0, connect_timeout=1)
    except Exception:
        return False
    try:
        await nc.jetstream(timeout=1).account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def service_settings(url: str, **extra: object) -> Settings:
    return Settings(nats_url=url, subject_prefix="wa", log_format="console", **extra)  # type: ignore[arg-type]


async def test_three_node_cluster_keeps_the_streams_on_three_replicas(tmp_path: Path) -> None:
    cluster_ports = [free_port() for _ in range(3)]
    routes = {
        f"NATS_ROUTE_{n + 1}": f"nats-route://127.0.0.1:{p}" for n, p in enumerate(cluster_ports)
    }
    configs = [
        (
            "cluster.conf",
            {
                "NATS_SERVER_NAME": f"n{n + 1}",
                "NATS_PORT": "0",  # overridden by -p
                "NATS_HTTP_PORT": "0",
                "NATS_CLUSTER_PORT": str(port),
                "NATS_STORE_DIR": str(tmp_path / f"n{n + 1}"),
                **routes,
            },
        )
        for n, port in enumerate(cluster_ports)
    ]
    with nats_nodes(configs, tmp_path) as nodes:
        await eventually(
            lambda: jetstream_ready(nodes[0].url("connector")), timeout=30, interval=0.2
        )
        settings = service_settings(nodes[0].url("connector"), stream_replicas=3)
        nc = await nats.connect(nodes[0].url("connector"))
        try:
            js = nc.jetstream()
            await ensure_streams(js, settings, replicas=1)  # as a single-node start left them
            assert (await js.stream_info(settings.topology.events_stream)).config.num_replicas == 1
            await ensure_streams(js, settings)  # WABUS_STREAM_REPLICAS=3 raises them in place
            topology = settings.topology
            for stream in (topology.events_stream, topology.commands_stream, topology.dlq_stream):
                assert (await js.stream_info(stream)).config.num_replicas == 3

                async def on_all_nodes(stream: str = stream) -> bool:
                    cluster = (await js.stream_info(stream)).cluster
                    assert cluster is not None
                    peers = {cluster.leader, *(peer.name for peer in cluster.replicas or [])}
                    return peers == {"n1", "n2", "n3"}

                await eventually(on_all_nodes, timeout=15)
            # a publish on another node lands in the same replicated stream
            other = await nats.connect(nodes[2].url("connector"))
            try:
                ack = await other.jetstream().publish("wa.evt.acme.message.received", b"{}")
                assert ack.stream == settings.topology.events_stream
            finally:
                await other.close()
        finally:
            await nc.close()


@dataclass
class Violations:
    errors: list[str] = field(default_factory=list)

    async def record(self, error: Exception) -> None:
        self.errors.append(str(error))

    async def seen(self, subject: str) -> bool:
        # nats-py reports the server's error lower-cased
        kind = "subscription" if ">" in subject else "publish"
        wanted = f'permissions violation for {kind} to "{subject}"'
        return any(wanted.lower() in error.lower() for error in self.errors)


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[tuple[NATS, Violations]]:
    violations = Violations()
    nc = await nats.connect(url, error_cb=violations.record)
    try:
        yield nc, violations
    finally:
        await nc.close()


@pytest.fixture
def single_node(tmp_path: Path) -> Iterator[Node]:
    with nats_nodes([("nats.conf", {"NATS_STORE_DIR": str(tmp_path / "js")})], tmp_path) as nodes:
        yield nodes[0]


async def test_each_user_may_do_only_its_part(single_node: Node) -> None:
    await eventually(lambda: jetstream_ready(single_node.url("connector")), timeout=15)
    async with (
        client(single_node.url("connector")) as (connector, connector_denied),
        client(single_node.url("relay")) as (relay, relay_denied),
        client(single_node.url("reader")) as (reader, reader_denied),
    ):
        await ensure_streams(connector.jetstream(), service_settings(single_node.url("connector")))
        seen: list[bytes] = []
        done = asyncio.Event()

        async def on_event(message: Msg) -> None:
            seen.append(message.data)
            done.set()

        await reader.subscribe("wa.evt.>", cb=on_event)
        await reader.flush()
        # A core subscription can miss what is published just after it was made, even after a
        # flush (nats-server under CPU load, about 1 run in 15 here): the connector publishes
        # until the reader has seen one, as a live reader would simply see the next event.
        published = 0
        while not done.is_set():
            assert published < 75, "the reader never saw what the connector published"
            published += 1
            ack = await connector.jetstream().publish("wa.evt.acme.presence.chat", b'{"n": 1}')
            assert ack.stream == "WA_EVENTS"
            with contextlib.suppress(TimeoutError):  # expected: not seen yet, publish again
                await asyncio.wait_for(done.wait(), 0.2)
        assert seen[0] == b'{"n": 1}'
        assert (await relay.jetstream().publish("wa.cmd.acme.send", b"{}")).stream == "WA_COMMANDS"

        # what each must not do
        await relay.publish("wa.evt.acme.message.received", b"{}")
        await connector.publish("wa.cmd.acme.send", b"{}")
        await connector.publish("wa.evt.acme.webhook.endpoint_disabled", b"{}")  # the relay's
        for subject in ("wa.evt.acme.message.received", "wa.cmd.acme.send", "$JS.API.INFO"):
            await reader.publish(subject, b"{}")
        await reader.subscribe("wa.cmd.>")
        for nc in (relay, connector, reader):
            await nc.flush()
        await eventually(lambda: relay_denied.seen("wa.evt.acme.message.received"))
        await eventually(lambda: connector_denied.seen("wa.cmd.acme.send"))
        await eventually(lambda: connector_denied.seen("wa.evt.acme.webhook.endpoint_disabled"))
        for subject in ("wa.evt.acme.message.received", "wa.cmd.acme.send", "$JS.API.INFO"):
            await eventually(lambda s=subject: reader_denied.seen(s))  # type: ignore[misc]
        await eventually(lambda: reader_denied.seen("wa.cmd.>"))
        stream = await connector.jetstream().stream_info("WA_EVENTS")
        assert stream.state.messages == published, "the refused publishes stored nothing"


async def test_the_services_run_on_their_least_privilege_users(
    single_node: Node, tmp_path: Path
) -> None:
    """The real connector and relay, each on its own user: an event becomes a verified webhook,
    its reply a send; a signed API send is executed too. A missing permission fails this test."""
    await eventually(lambda: jetstream_ready(single_node.url("connector")), timeout=15)
    webhook_secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    receiver = Receiver(webhook_secret, answer=lambda e: {"reply": {"text": "echo"}})
    common = {
        "api_keys": [f"{API_KEY_ID}:{API_SECRET}"],
        "webhook_secret": webhook_secret,
        "webhook_allow_cidrs": ["127.0.0.0/8"],
        "webhook_retry_schedule": (0.0, 0.2, 0.2),
        "engine": "sim",
        "host": "127.0.0.1",
        "data_dir": tmp_path / "data",
    }
    stop = asyncio.Event()
    async with running(receiver.app()) as receiver_url:
        relay_settings = service_settings(
            single_node.url("relay"), webhook_url=receiver_url + "/hook", **common
        )
        connector_settings = service_settings(
            single_node.url("connector"), port=free_port(), **common
        )
        connector_task = asyncio.create_task(run_connector(connector_settings, stop))
        try:
            async with (
                running(create_app(relay_settings)) as relay_url,
                client(single_node.url("connector")) as (publisher, _),
                RelayClient(relay_url, API_KEY_ID, API_SECRET) as api,
            ):
                # the relay (its user) writes the instance; the connector (its user) runs it
                await api.create_instance("acme")
                await eventually(lambda: _state(api, "acme", "open"), timeout=20, interval=0.1)
                message = MessageReceived(
                    message_id="3EB0AA", chat="5511999999999@s.whatsapp.net",
                    from_="5511999999999@s.whatsapp.net", from_me=False, type=MessageKind.TEXT,
                    text="hi", timestamp="2026-11-25T12:00:00Z",
                )  # fmt: skip
                event = make_event("acme", message)
                await publisher.jetstream().publish(
                    "wa.evt.acme.message.received", encode(event), headers={"Nats-Msg-Id": event.id}
                )
                await receiver.wait_for(lambda e: e["id"] == event.id, timeout=20)
                await receiver.wait_for(
                    lambda e: (
                        e["type"] == "message.sent"
                        and e["data"]["command_id"] == f"reply-{event.id}"
                    ),
                    timeout=20,
                )
                accepted = await api.send_text("acme", "5511888888888", "from the API")
                await receiver.wait_for(
                    lambda e: (
                        e["type"] == "message.sent"
                        and e["data"]["command_id"] == accepted["command_id"]
                    ),
                    timeout=20,
                )
                # a query: the relay asks on wa.req.*, the connector answers on the reply subject
                assert await api.groups("acme") == []
                checked = await api.check_numbers("acme", ["5511999999999"])
                assert [n["on_whatsapp"] for n in checked] == [False]  # nobody on the sim yet
                assert receiver.rejected == []
        finally:
            stop.set()
            await connector_task
    print(json.dumps({"log": single_node.log.read_text()[-2000:]}))


async def _state(api: RelayClient, instance: str, state: str) -> bool:
    try:
        status = await api.status(instance)
    except RelayError:
        return False
    return bool(status.get("state") == state)


async def test_buckets_and_media_follow_the_service_roles(single_node: Node) -> None:
    """The KV buckets and the object store of the contract, used as each service uses them."""
    await eventually(lambda: jetstream_ready(single_node.url("connector")), timeout=15)
    async with (
        client(single_node.url("connector")) as (connector, connector_denied),
        client(single_node.url("relay")) as (relay, relay_denied),
    ):
        cjs, rjs = connector.jetstream(), relay.jetstream()
        # the relay owns instance configuration; the connector watches it
        instances = await rjs.create_key_value(bucket="wa_instances")
        await instances.put("acme", b'{"id": "acme"}')
        watched: Any = await (await cjs.key_value("wa_instances")).watch("acme")  # untyped API
        entry = await watched.updates(timeout=5)
        assert entry is not None
        assert entry.value == b'{"id": "acme"}'
        await watched.stop()

        # the connector owns status, leases and send records; the relay reads and watches them
        status = await cjs.create_key_value(bucket="wa_status")
        await status.put("acme", b'{"state": "open"}')
        leases = await cjs.create_key_value(bucket="wa_leases")
        await leases.create("acme", b"connector-1")
        sends = await cjs.create_key_value(bucket="wa_sends")
        await sends.put("acme.cmd_1", b'{"state": "sent"}')
        assert (await (await rjs.key_value("wa_status")).get("acme")).value == b'{"state": "open"}'
        sends_seen: Any = await (await rjs.key_value("wa_sends")).watch("acme.cmd_1")
        sent = await sends_seen.updates(timeout=5)
        assert sent is not None
        assert sent.value == b'{"state": "sent"}'
        await sends_seen.stop()

        # inbound media: the connector stores, the relay serves
        media = await cjs.create_object_store("wa_media")
        await media.put("med_1", b"\x89PNG" * 1000)
        served = await (await rjs.object_store("wa_media")).get("med_1")
        assert served.data == b"\x89PNG" * 1000

        # and not the other way round
        await relay.publish("$KV.wa_status.acme", b"{}")
        await connector.publish("$KV.wa_instances.acme", b"{}")
        await relay.flush()
        await connector.flush()
        await eventually(lambda: relay_denied.seen("$KV.wa_status.acme"))
        await eventually(lambda: connector_denied.seen("$KV.wa_instances.acme"))
