"""Benchmark: slow clients and a flood of bad signatures against the relay (not a test; run it by
hand). Every figure is compared with a baseline measured in the same run.

Starts an embedded nats-server and relays (`python -m relay`, one worker each) on free ports,
then, from this process (aiohttp for the signed requests, raw sockets for the slow ones):

1. baseline: `--probes` signed sends one after another (latency p50/p99);
2. slowloris: `--slow` connections each sending a request head one byte per `--pause` seconds
   (a head that never ends), against a relay with `WABUS_HEADER_TIMEOUT=--header-timeout`; the
   same signed sends run meanwhile. Reported: how many were closed, when (median and max, and
   as a ratio of the timeout), and the signed latency as a ratio of the baseline;
3. the same slow connections against a relay with the deadline off (`WABUS_HEADER_TIMEOUT=0`,
   what uvicorn does alone): how many are still open after twice the timeout;
4. flood: a separate process posts `--flood-rate` requests a second (open loop, over
   `--flood-connections` loops, a new connection each) of `--flood-body` bytes with a bad
   signature from one client address (X-Forwarded-For through the trusted proxy 127.0.0.1) for
   `--flood-seconds`, while signed sends come from another address; once with the guard (100
   failures per 15 minutes) and once without it (`WABUS_AUTH_FAILURE_LIMIT=0`). Reported: flood
   answers by status, the relay's CPU share and CPU milliseconds per flood request, and the
   signed latency as a ratio of the baseline.

    python bench/slow_clients.py --slow 200 --header-timeout 5 --pause 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procfs import cpu_seconds, process_tree  # noqa: E402 - beside this script
from relay_sends import _wait_ready  # noqa: E402

from relay.client import signed_headers  # noqa: E402
from wabus.embedded import EmbeddedNats, free_port  # noqa: E402

KEY_ID = "bench"
SECRET = "bench-secret-" + "z" * 24
PREFIX = "benchslow"
TARGET = "/v1/instances/bench/messages"
ATTACKER = "203.0.113.7"
CLIENT = "198.51.100.9"


@contextmanager
def relay(nats_url: str, **settings: str) -> Iterator[tuple[str, int]]:
    """A relay process with `settings` (environment variables); yields its URL and pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "NATS_URL": nats_url,
        "PORT": str(port),
        "WABUS_HOST": "127.0.0.1",
        "WABUS_API_KEYS": f"{KEY_ID}:{SECRET}",
        "WABUS_RELAY_WORKERS": "1",
        "WABUS_SUBJECT_PREFIX": PREFIX,
        "WABUS_RATE_LIMIT": "0",
        "WABUS_TRUSTED_PROXIES": "127.0.0.1/32",
        "LOG_LEVEL": "ERROR",
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    process = subprocess.Popen([sys.executable, "-m", "relay"], env=env, cwd=ROOT)
    try:
        _wait_ready(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


async def signed_sends(
    url: str, count: int, client: str = CLIENT
) -> tuple[list[float], Counter[int]]:
    """`count` signed sends one after another; their latencies and statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession() as http:
        for number in range(count):
            body = json.dumps({"to": "5511999999999", "text": f"probe {number} {time.time()}"})
            headers = signed_headers(KEY_ID, SECRET, "POST", TARGET, body.encode(), time.time())
            headers |= {"Content-Type": "application/json", "X-Forwarded-For": client}
            started = time.perf_counter()
            async with http.post(url + TARGET, data=body, headers=headers) as answer:
                await answer.read()
                statuses[answer.status] += 1
            latencies.append(time.perf_counter() - started)
    return latencies, statuses


async def slow_connection(port: int, pause: float, give_up: float) -> float | None:
    """A head sent a byte per `pause` s; seconds until the relay closed it (None: still open
    after `give_up` s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: " + b"a" * 100_000

    async def trickle() -> None:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(pause)

    sending = asyncio.create_task(trickle())
    try:
        await asyncio.wait_for(reader.read(), give_up)
        return time.monotonic() - opened
    except TimeoutError:
        return None
    except ConnectionError:
        return time.monotonic() - opened
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()


async def slowloris(url: str, args: argparse.Namespace, give_up: float) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    slow = [
        asyncio.create_task(slow_connection(port, args.pause, give_up)) for _ in range(args.slow)
    ]
    await asyncio.sleep(0.5)
    latencies, statuses = await signed_sends(url, args.probes)
    closed = [seconds for seconds in await asyncio.gather(*slow) if seconds is not None]
    return {
        "slow_connections": args.slow,
        "closed": len(closed),
        "still_open_after_s": give_up,
        "closed_after_median_s": round(statistics.median(closed), 2) if closed else None,
        "closed_after_max_s": round(max(closed), 2) if closed else None,
        "signed_meanwhile": dict(statuses),
        **_percentiles(latencies),
    }


async def _attack(url: str, rate: float, seconds: float, loops: int, size: int) -> dict[str, Any]:
    """Open loop: `rate` bad-signature posts a second in all, spread over `loops` connections
    (each request on a new connection, as the guard's 429 closes them anyway)."""
    body = b"x" * size
    answers: Counter[str] = Counter()
    started = time.monotonic()

    async def loop(offset: int) -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            number = offset
            while (due := started + number / rate) < started + seconds:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                headers = signed_headers(KEY_ID, "wrong-secret-" + "w" * 20, "POST", TARGET, body,
                                         time.time())  # fmt: skip
                headers["X-Forwarded-For"] = ATTACKER
                try:
                    async with http.post(url + TARGET, data=body, headers=headers) as answer:
                        await answer.read()
                        answers[str(answer.status)] += 1
                except aiohttp.ClientError as error:
                    answers[type(error).__name__] += 1
                number += loops

    await asyncio.gather(*(loop(offset) for offset in range(loops)))
    return {"answers": dict(answers), "achieved_rate": round(sum(answers.values()) / seconds)}


def _attacker(url: str, args: argparse.Namespace, out: Any) -> None:
    """The flood, in a process of its own so that it does not slow this one's signed sends."""
    out.put(
        asyncio.run(
            _attack(
                url, args.flood_rate, args.flood_seconds, args.flood_connections, args.flood_body
            )
        )
    )


async def flood(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    attacker = context.Process(target=_attacker, args=(url, args, out))
    pids = process_tree(pid)
    cpu_before, clock_before = cpu_seconds(pids), time.monotonic()
    attacker.start()
    await asyncio.sleep(1.0)  # the attacker process is up and flooding
    latencies, statuses = await signed_sends(url, args.probes)
    outcome = await asyncio.to_thread(out.get)
    attacker.join()
    cpu, wall = cpu_seconds(pids) - cpu_before, time.monotonic() - clock_before
    sent = sum(outcome["answers"].values())
    return {
        "flood_offered_per_s": args.flood_rate,
        "flood_achieved_per_s": outcome["achieved_rate"],
        "flood_answers": outcome["answers"],
        "relay_cpu_share": round(cpu / wall, 2),
        "relay_cpu_ms_per_flood_request": round(cpu / sent * 1000, 3) if sent else None,
        "signed_meanwhile": dict(statuses),
        **_percentiles(latencies),
    }


def _ratio(during: dict[str, Any], baseline: dict[str, Any], name: str) -> float:
    return round(during[name] / baseline[name], 2) if baseline[name] else 0.0


async def run(args: argparse.Namespace, nats_url: str) -> None:
    timeout = str(args.header_timeout)
    with relay(nats_url, WABUS_HEADER_TIMEOUT=timeout) as (url, _):
        await signed_sends(url, 50)  # warm up
        baseline = _percentiles((await signed_sends(url, args.probes))[0])
        print(json.dumps({"baseline_signed": baseline}), flush=True)
        cut = await slowloris(url, args, give_up=args.header_timeout * 3 + 10)
        cut["closed_after_max_over_timeout"] = round(
            (cut["closed_after_max_s"] or 0) / args.header_timeout, 2
        )
        cut["signed_p50_ratio"] = _ratio(cut, baseline, "p50_ms")
        cut["signed_p99_ratio"] = _ratio(cut, baseline, "p99_ms")
        print(json.dumps({"slowloris_deadline_on": cut}), flush=True)
    with relay(nats_url, WABUS_HEADER_TIMEOUT="0") as (url, _):
        await signed_sends(url, 50)
        kept = await slowloris(url, args, give_up=args.header_timeout * 2)
        kept["signed_p50_ratio"] = _ratio(kept, baseline, "p50_ms")
        print(json.dumps({"slowloris_deadline_off": kept}), flush=True)
    for guard, limit in (("on", "100"), ("off", "0")):
        with relay(nats_url, WABUS_AUTH_FAILURE_LIMIT=limit) as (url, pid):
            await signed_sends(url, 50)
            flooded = await flood(url, pid, args)
            flooded["signed_p50_ratio"] = _ratio(flooded, baseline, "p50_ms")
            flooded["signed_p99_ratio"] = _ratio(flooded, baseline, "p99_ms")
            print(json.dumps({f"flood_guard_{guard}": flooded}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=200, help="slow connections")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between their bytes")
    parser.add_argument("--header-timeout", type=float, default=5.0, help="WABUS_HEADER_TIMEOUT")
    parser.add_argument("--probes", type=int, default=300, help="signed sends per measurement")
    parser.add_argument("--flood-rate", type=float, default=1000.0, help="flood requests/s")
    parser.add_argument("--flood-connections", type=int, default=32, help="flood loops")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--flood-body", type=int, default=65_536, help="bytes per flood request")
    args = parser.parse_args()
    print(json.dumps({"cpus": os.cpu_count(), **vars(args)}), flush=True)
    with tempfile.TemporaryDirectory() as scratch, EmbeddedNats(Path(scratch) / "nats") as server:
        asyncio.run(run(args, server.url))


if __name__ == "__main__":
    main()
