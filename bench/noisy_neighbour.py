"""Benchmark: one key's large inline-media sends against another key's small ones (not a test).

One relay worker on an embedded nats-server, two keys. The quiet key sends small text sends at
a fixed rate (`--rate`, open loop: latency from each request's scheduled time, as in
relay_sends.py); meanwhile the noisy key sends stickers with `--media-mib` MiB of inline base64
that is no image, `--noisy` requests in flight, as fast as the relay answers. Each of those
costs the relay its body's validation and decoding before the probe refuses it (422): CPU the
quiet key's sends wait behind on the same worker. Run twice: the per-key body-byte budget off
(`WABUS_RATE_LIMIT_BYTES=0`) and at its default; compare the quiet key's latencies and the
relay's CPU.

    python bench/noisy_neighbour.py --seconds 10 --rate 100 --noisy 4 --media-mib 4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procfs import cpu_seconds, process_tree  # noqa: E402 - beside this script
from relay_sends import (  # noqa: E402 - beside this script
    INSTANCE,
    KEY_ID,
    SECRET,
    _percentile,
    _run_phase,
    _wait_ready,
    relay_environment,
)

from relay.client import signed_headers  # noqa: E402
from wabus.embedded import EmbeddedNats, free_port  # noqa: E402

NOISY_KEY = "noisy"
NOISY_SECRET = "noisy-secret-" + "n" * 24


async def _noisy(url: str, seconds: float, in_flight: int, media_mib: float) -> dict[str, int]:
    """Large stickers that are no image, `in_flight` at a time, until `seconds` pass."""
    import aiohttp

    data = base64.b64encode(os.urandom(int(media_mib * (1 << 20))))
    target = f"/v1/instances/{INSTANCE}/messages"
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def sender(http: aiohttp.ClientSession, number: int) -> None:
        count = 0
        while time.monotonic() < deadline:
            count += 1
            to = f"551199{number:02d}{count:05d}".encode()  # each body, so each signature, new
            body = b'{"to":"' + to + b'","type":"sticker","base64":"' + data + b'"}'
            headers = signed_headers(NOISY_KEY, NOISY_SECRET, "POST", target, body, time.time())
            headers["Content-Type"] = "application/json"
            async with http.post(url + target, data=body, headers=headers) as answer:
                await answer.read()
                statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
                if answer.status == 429:
                    retry = float(answer.headers.get("Retry-After", "1"))
                    await asyncio.sleep(min(retry, max(0.0, deadline - time.monotonic())))

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(sender(http, number) for number in range(in_flight)))
    return statuses


def _noisy_process(args: tuple[str, float, int, float], out: Any) -> None:
    out.put(asyncio.run(_noisy(*args)))


def _run(byte_limit: str, options: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, EmbeddedNats(Path(scratch) / "nats") as server:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        keys = f"{KEY_ID}:{SECRET},{NOISY_KEY}:{NOISY_SECRET}"
        env = relay_environment(server.url, port, keys, 1)
        if byte_limit:
            env["WABUS_RATE_LIMIT_BYTES"] = byte_limit
        relay = subprocess.Popen([sys.executable, "-m", "relay"], env=env, cwd=ROOT)
        try:
            _wait_ready(url, relay)
            _run_phase("open", url, 1, 2, options.rate, 0)  # warm up
            pids = process_tree(relay.pid)
            before = cpu_seconds(pids)
            context = multiprocessing.get_context("spawn")
            answers = context.Queue()
            noisy = context.Process(
                target=_noisy_process,
                args=((url, options.seconds, options.noisy, options.media_mib), answers),
            )
            noisy.start()
            quiet, elapsed = _run_phase("open", url, 1, options.seconds, options.rate, 0)
            statuses = answers.get(timeout=options.seconds + 120)
            noisy.join()
            cpu = cpu_seconds(pids) - before
        finally:
            relay.terminate()
            relay.wait(30)
    latencies = quiet.latencies_ms
    return {
        "body_byte_budget": "off" if byte_limit == "0" else "default (8 MiB/s, burst 32 MiB)",
        "quiet_sends_accepted": quiet.accepted,
        "quiet_errors": quiet.errors,
        "quiet_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "quiet_p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "quiet_max_ms": round(max(latencies), 2) if latencies else None,
        "noisy_answers": statuses,
        "relay_cpu_share": round(cpu / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="quiet key's sends/s")
    parser.add_argument("--noisy", type=int, default=4, help="noisy requests in flight")
    parser.add_argument("--media-mib", type=float, default=4.0, help="inline media per request")
    options = parser.parse_args()
    for byte_limit in ("0", ""):
        print(json.dumps(_run(byte_limit, options)), flush=True)


if __name__ == "__main__":
    main()
