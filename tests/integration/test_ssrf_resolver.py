"""The guarded connector against real name resolution and a real local server."""

from __future__ import annotations

import ipaddress

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support import running
from wabus.ssrf import BlockedTarget, guarded_connector


def app() -> Starlette:
    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", ok)])


async def test_a_name_resolving_to_loopback_is_refused_unless_allow_listed() -> None:
    async with running(app()) as url:
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
