"""The SSRF guard on the paths that use it, against real parts: the guarded connector with real
name resolution and a real local server, the connector's fetch of a user's URL
(`connector.fetch.fetch_bytes`, and a media send's `connector.preparation.load_media` on top
of it), and webhook endpoint creation on a real relay and nats-server. Every IPv6 form that
embeds loopback or the metadata address is refused; an IPv4-mapped loopback address,
allow-listed, really connects (the control).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from connector.engine import SendError
from connector.fetch import Fetched, FetchError, fetch_bytes
from connector.preparation import FETCH_TIMEOUT, load_media
from relay.app import create_app
from schemas.commands import MAX_MEDIA_BYTES, SendImage
from tests.relay_helpers import signed
from tests.support import running
from wabus.settings import Settings
from wabus.ssrf import BlockedTarget, GuardedResolver, Network, guarded_connector

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")

EMBEDDED_LOOPBACK = [
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # IPv4-translated
    "2002:7f00:1::1",  # 6to4
    "64:ff9b::7f00:1",  # NAT64
    "64:ff9b:1::7f00:1",  # NAT64, local use
    "2001:0:808:808:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:7f00:1:8000:63bf:f7f7:f7f7",  # Teredo, server 127.0.0.1
]
EMBEDDED_METADATA = ["::ffff:169.254.169.254", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe"]
EMBEDDED_GLOBAL = [
    "2002:808:808::1",
    "64:ff9b::808:808",
    "::ffff:8.8.8.8",
    "2001:0:808:808:8000:63bf:f7f7:f7f7",
]
"""The same forms around a global address: allowed (the controls)."""


class Requests:
    """A local server that counts what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def app(self) -> Starlette:
        async def image(request: Request) -> Response:
            self.paths.append(request.url.path)
            return Response(PNG, media_type="image/png")

        async def ok(request: Request) -> PlainTextResponse:
            self.paths.append(request.url.path)
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/image.png", image), Route("/", ok)])


class Answers(AbstractResolver):
    """A DNS that answers what the test says (a rebinding attacker's name server)."""

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self._addresses
        ]

    async def close(self) -> None:
        return None


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def fetch(url: str, allow: tuple[Network, ...] = ()) -> Fetched:
    """The fetch of a media send (its limit and timeouts)."""
    return await fetch_bytes(url, allow=allow, limit=MAX_MEDIA_BYTES, timeout=FETCH_TIMEOUT)


def image_send(url: str) -> SendImage:
    return SendImage(type="image", to="4915112345678", url=url)


async def test_a_name_resolving_to_loopback_is_refused_unless_allow_listed() -> None:
    async with running(Requests().app()) as url:
        by_name = url.replace("127.0.0.1", "localhost")
        async with aiohttp.ClientSession(connector=guarded_connector()) as http:
            with pytest.raises(aiohttp.ClientConnectorError) as raised:
                await http.get(by_name)
            assert isinstance(raised.value.os_error, BlockedTarget)
        allow = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
        async with (
            aiohttp.ClientSession(connector=guarded_connector(allow)) as http,
            http.get(by_name) as response,
        ):
            assert await response.text() == "ok"


@pytest.mark.parametrize("answer", EMBEDDED_LOOPBACK + EMBEDDED_METADATA)
async def test_a_name_resolving_to_an_embedded_loopback_or_metadata_address_is_refused(
    answer: str,
) -> None:
    server = Requests()
    async with running(server.app()) as url:
        target = f"http://hook.example:{port_of(url)}/"
        resolver = GuardedResolver(inner=Answers(answer, "8.8.8.8"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as http:
            with pytest.raises(aiohttp.ClientConnectorError) as raised:
                await http.get(target)
        assert isinstance(raised.value.os_error, BlockedTarget)
        assert raised.value.os_error.host == "hook.example"
        assert server.paths == []
        # the control: an IPv6 answer that reaches the local server, once allow-listed
        mapped = GuardedResolver(LOOPBACK, inner=Answers("::ffff:127.0.0.1"))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=mapped)) as http,
            http.get(target) as response,
        ):
            assert await response.text() == "ok"
        assert server.paths == ["/"]


@pytest.mark.parametrize("literal", EMBEDDED_LOOPBACK + EMBEDDED_METADATA)
async def test_media_fetch_refuses_ipv6_literals_embedding_loopback_or_metadata(
    literal: str,
) -> None:
    server = Requests()
    async with running(server.app()) as url:
        port = port_of(url)
        with pytest.raises(FetchError) as refused:
            await fetch(f"http://[{literal}]:{port}/image.png")
        assert refused.value.code == "media_blocked"
        assert "127.0.0.1" in str(refused.value) or "169.254.169.254" in str(refused.value)
        with pytest.raises(SendError) as send_refused:  # a media send: the same refusal
            await load_media(image_send(f"http://[{literal}]:{port}/image.png"))
        assert (send_refused.value.code, send_refused.value.retryable) == ("media_blocked", False)
        with pytest.raises(FetchError) as mapped_refused:
            await fetch(f"http://[::ffff:127.0.0.1]:{port}/image.png")
        assert mapped_refused.value.code == "media_blocked"
        assert server.paths == []
        fetched = await fetch(f"http://[::ffff:127.0.0.1]:{port}/image.png", LOOPBACK)
        # the control: the guard, not the network, refused
        assert (fetched.data, fetched.content_type) == (PNG, "image/png")
        assert server.paths == ["/image.png"]


@pytest.mark.parametrize("host", ["0x7f000001", "localhost"])
async def test_media_fetch_refuses_names_that_are_loopback(host: str) -> None:
    server = Requests()
    async with running(server.app()) as url:
        target = url.replace("127.0.0.1", host) + "/image.png"
        with pytest.raises(FetchError) as refused:
            await fetch(target)
        assert refused.value.code == "media_blocked"
        with pytest.raises(SendError) as send_refused:
            await load_media(image_send(target))
        assert send_refused.value.code == "media_blocked"
        assert server.paths == []
        fetched = await fetch(target, LOOPBACK)  # the control
        assert (fetched.data, fetched.content_type) == (PNG, "image/png")
        assert await load_media(image_send(target), LOOPBACK) == (PNG, "image/png")
        assert server.paths == ["/image.png", "/image.png"]


@pytest.fixture
async def relay_url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings)) as base:
        yield base


async def stored_configs(nc: NATS, settings: Settings) -> int:
    kv = await nc.jetstream().key_value(settings.topology.config_bucket)
    return int((await kv.status()).values)


async def test_webhook_endpoints_embedding_loopback_or_metadata_are_refused(
    relay_url: str, nc: NATS, settings: Settings
) -> None:
    """`422 webhook_url_blocked` as problem+json, nothing stored; the same forms around a
    global address are accepted."""
    for n, literal in enumerate(EMBEDDED_LOOPBACK + EMBEDDED_METADATA):
        hook = {"url": f"http://[{literal}]:8080/hook"}
        created = await signed(
            relay_url, "POST", "/v1/instances", {"id": f"bad{n}", "webhooks": [hook]}
        )
        assert created.status_code == 422, (literal, created.text)
        assert created.headers["content-type"].startswith("application/problem+json")
        assert created.json()["code"] == "webhook_url_blocked"
        assert "webhooks[0].url" in created.json()["detail"]
    for n, host in enumerate(["127.1", "0x7f000001", "2130706433", "017700000001"]):
        hook = {"url": f"http://{host}:8080/hook"}  # names to the URL parser, loopback to libc
        created = await signed(
            relay_url, "POST", "/v1/instances", {"id": f"odd{n}", "webhooks": [hook]}
        )
        assert created.status_code == 422, (host, created.text)
        assert created.json()["code"] == "webhook_url_blocked"
    assert await stored_configs(nc, settings) == 0

    for n, literal in enumerate(EMBEDDED_GLOBAL):  # the control
        hook = {"url": f"https://[{literal}]/hook"}
        created = await signed(
            relay_url, "POST", "/v1/instances", {"id": f"good{n}", "webhooks": [hook]}
        )
        assert created.status_code == 201, (literal, created.text)
    assert await stored_configs(nc, settings) == len(EMBEDDED_GLOBAL)


async def test_added_webhooks_embedding_loopback_or_metadata_are_refused(
    relay_url: str, nc: NATS, settings: Settings
) -> None:
    assert (await signed(relay_url, "POST", "/v1/instances", {"id": "acme"})).status_code == 201
    for literal in EMBEDDED_LOOPBACK + EMBEDDED_METADATA:
        hook = {"url": f"http://[{literal}]/hook"}
        added = await signed(relay_url, "POST", "/v1/instances/acme/webhooks", hook)
        assert added.status_code == 422, (literal, added.text)
        assert added.json()["code"] == "webhook_url_blocked"
    shown = await signed(relay_url, "GET", "/v1/instances/acme")
    assert shown.json()["webhooks"] == []
    control = {"url": "https://[64:ff9b::8.8.8.8]/hook"}
    added = await signed(relay_url, "POST", "/v1/instances/acme/webhooks", control)
    assert added.status_code == 201, added.text
    shown = await signed(relay_url, "GET", "/v1/instances/acme")
    assert [w["url"] for w in shown.json()["webhooks"]] == [control["url"]]
