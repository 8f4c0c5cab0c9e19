"""Benchmark: the webhook HTTP client against the candidates it was chosen over (not a test).

One raw keep-alive receiver (the one of `webhook_delivery.py`, in a process of its own, answering
204); each candidate then POSTs `--requests` webhook-sized bodies with `--concurrency` in flight,
in a fresh process of its own, in rounds, so that every candidate meets the same machine state.
Reported per candidate: requests/s, and CPU per request of the whole process and of its main
thread (the one the relay's event loop runs on; a client that works in threads of its own shows
the difference).

Candidates: `wabus` (relay/delivery/http.py: pycurl with the relay's own epoll driver),
`pycurl-driver` (the same client on pycurl's `AsyncCurlMulti`), `aiohttp` (one tuned session:
no cookie jar, no redirects, no decompression), `pyreqwest` (when installed).

    python bench/http_clients.py
    python bench/http_clients.py --requests 50000 --rounds 3 wabus pycurl-driver
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
BODY = (
    b'{"id":"evt_x","type":"message.received","instance":"bench","data":{"text":"'
    + (b"x" * 380)
    + b'"}}'
)
Post = Callable[[bytes, dict[str, str]], Awaitable[Any]]


async def _client(kind: str, url: str, concurrency: int) -> tuple[Post, Callable[[], Any]]:
    if kind in ("wabus", "pycurl-driver"):
        from relay.delivery import curl_loop, http

        if kind == "pycurl-driver":
            http.open_curl_loop = curl_loop._PycurlDriver  # type: ignore[assignment]
        client = http.EndpointClient(url, allow=LOOPBACK, limit=concurrency)
        return client.post, client.close
    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

        async def post_aiohttp(body: bytes, headers: dict[str, str]) -> int:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                await r.read()
                return r.status

        return post_aiohttp, session.close
    if kind == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        reqwest = (
            ClientBuilder().max_connections(concurrency).follow_redirects(False).http1_only()
        ).build()

        async def post_reqwest(body: bytes, headers: dict[str, str]) -> int:
            response = await reqwest.post(url).body_bytes(body).headers(headers).build().send()
            await response.bytes()
            return int(response.status)

        return post_reqwest, reqwest.close
    raise SystemExit(f"unknown candidate {kind!r}")


async def _measure(kind: str, url: str, requests: int, concurrency: int) -> dict[str, Any]:
    post, close = await _client(kind, url, concurrency)
    sent = 0

    async def worker(number: int) -> None:
        nonlocal sent
        while sent < requests:
            sent += 1
            await post(
                BODY,
                {
                    "webhook-id": f"evt_{number}_{sent}",
                    "webhook-timestamp": "1700000000",
                    "webhook-signature": "v1,c2lnbmF0dXJl",
                    "content-type": "application/json",
                },
            )

    await asyncio.gather(*(worker(n) for n in range(concurrency)))  # warm-up: connections
    sent = 0
    started, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    seconds = time.perf_counter() - started
    result = {
        "candidate": kind,
        "requests_per_second": round(requests / seconds),
        "cpu_us": round((time.process_time() - cpu) / requests * 1e6, 1),
        "main_thread_cpu_us": round((time.thread_time() - thread) / requests * 1e6, 1),
    }
    closing = close()
    if asyncio.iscoroutine(closing):
        await closing
    return result


def _child(kind: str, url: str, requests: int, concurrency: int) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_measure(kind, url, requests, concurrency))
    return uvloop.run(_measure(kind, url, requests, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*", default=["wabus", "pycurl-driver", "aiohttp"])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()

    from webhook_delivery import _receiver_process

    from relay.webhooks.signature import new_secret
    from wabus.embedded import free_port

    port = free_port()
    receiver = multiprocessing.Process(
        target=_receiver_process, args=(port, new_secret()), daemon=True
    )
    receiver.start()
    time.sleep(1.0)
    url = f"http://127.0.0.1:{port}/hook"
    spawn = multiprocessing.get_context("spawn")
    try:
        for round_number in range(1, options.rounds + 1):
            for kind in options.candidates:
                with spawn.Pool(1) as pool:
                    result = pool.apply(_child, (kind, url, options.requests, options.concurrency))
                print(f"round {round_number}  {result}", flush=True)
    finally:
        receiver.terminate()


if __name__ == "__main__":
    main()
