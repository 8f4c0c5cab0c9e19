"""Benchmark: signed sends through the relay into `WA_COMMANDS` (not a test; run it by hand).

Starts an embedded nats-server and the relay (`python -m relay`, WABUS_RELAY_WORKERS worker
processes) on free ports, then drives signed `POST /v1/instances/bench/messages` requests from
separate load-generator processes (each request with its own body, so no two signatures
repeat). Two phases:

- latency: open loop at a fixed `--rate` sends/s, requests signed beforehand and written as raw
  HTTP/1.1 on kept-alive connections (aiohttp signing as it went cost the generators more CPU
  than the relay on a 2-core machine); latency is measured from each request's *scheduled*
  time, so a stalled relay cannot hide queueing (no coordinated omission);
- throughput: closed loop, `--connections` requests in flight per generator, for `--duration` s;
  with `--load wrk` (the default when Debian's `wrk` is installed) wrk sends requests signed
  beforehand (each signature used once, all within the ±300 s window; `--wrk-cap` per second
  of run — when wrk runs out of them the run says so, its rate being the cap's); with
  `--load python` aiohttp processes sign each request as they send it.

The latency phase runs first, on the freshly warmed-up relay, then the throughput phase. With
`--express DIR` the Node design's Express API gets the same wrk load right after
(`express_baseline.py`), and the ratio of the two rates is printed. At the end the script
checks that every accepted send (202) is in `WA_COMMANDS` (and every Express `202` in its queue).

    python bench/relay_sends.py --workers 1 --generators 2 --connections 32 --duration 15 \\
        --rate 1000 --rate-duration 15 --express /path/to/a/copy/of/seed-baseline
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from express_baseline import run_express  # noqa: E402 - beside this script
from procfs import cpu_seconds, process_tree  # noqa: E402 - beside this script

from relay.client import signed_headers  # noqa: E402
from wabus.embedded import EmbeddedNats, free_port  # noqa: E402

KEY_ID = "bench"
SECRET = "bench-secret-" + "z" * 24
PREFIX = "bench"
INSTANCE = "bench"
TARGET = f"/v1/instances/{INSTANCE}/messages"
SIGNATURE_ENV = "WABUS_BENCH_SIGNATURE"
"""`--signature`, passed to the spawned generator processes through their environment."""


def _version() -> int:
    return int(os.environ.get(SIGNATURE_ENV, "2"))


@dataclass
class Result:
    accepted: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)


async def _post(session: Any, url: str, generator: int, number: int) -> int:
    body = json.dumps(
        {"to": "5511999999999", "text": f"bench {generator}-{number}-{time.time_ns()}"}
    ).encode()
    headers = signed_headers(KEY_ID, SECRET, "POST", TARGET, body, time.time(), version=_version())
    headers["Content-Type"] = "application/json"
    async with session.post(url + TARGET, data=body, headers=headers) as response:
        await response.read()
        return int(response.status)


async def _closed_loop(url: str, generator: int, connections: int, seconds: float) -> Result:
    import aiohttp

    result = Result()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                status = await _post(session, url, generator, next(counter))
                if status == 202:
                    result.accepted += 1
                    result.latencies_ms.append((time.perf_counter() - start) * 1000)
                else:
                    result.errors[status] = result.errors.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return result


def _raw_request(host: str, generator: int, number: int, now: float) -> bytes:
    """One signed send as the bytes on the wire (signed ahead of its turn: the generator's own
    CPU per request stays a fraction of aiohttp's, which competed with the relay for 2 cores)."""
    body = json.dumps({"to": "5511999999999", "text": f"bench {generator}-{number}-{now}"})
    headers = signed_headers(KEY_ID, SECRET, "POST", TARGET, body.encode(), now, version=_version())
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {TARGET} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n{body}"
    ).encode()


_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


async def _exchange(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes) -> int:
    """Send one request on a kept-alive connection; its status once the answer is read."""
    reader, writer = stream
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = _LENGTH.search(head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return int(head[9:12])


async def _open_loop(url: str, generator: int, rate: float, seconds: float) -> Result:
    """Requests started at a fixed rate on kept-alive connections (a new one when all are
    busy); latency counts from each request's scheduled time, not from when it could start."""
    result = Result()
    interval = 1.0 / rate
    total = int(rate * seconds)
    host, port = url.removeprefix("http://").split(":")
    now = time.time()
    requests = [_raw_request(f"{host}:{port}", generator, n, now) for n in range(total)]
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened: list[asyncio.StreamWriter] = []
    clock = time.perf_counter  # uvloop's loop.time() is cached per iteration, in ms
    start = clock() + 0.05
    running: set[asyncio.Task[None]] = set()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        stream = await asyncio.open_connection(host, int(port))
        opened.append(stream[1])
        return stream

    async def one(raw: bytes, scheduled: float) -> None:
        stream = idle.pop() if idle else await connect()
        try:
            status = await _exchange(stream, raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            # a kept-alive connection the server closed while idle (uvicorn: after 5 s):
            # nothing was read from it, so the request goes again on a new one, as any
            # HTTP client does; a second failure counts as an error
            try:
                stream = await connect()
                status = await _exchange(stream, raw)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors[-1] = result.errors.get(-1, 0) + 1
                return
        idle.append(stream)
        if status == 202:
            result.accepted += 1
            result.latencies_ms.append((clock() - scheduled) * 1000)
        else:
            result.errors[status] = result.errors.get(status, 0) + 1

    for number, raw in enumerate(requests):
        scheduled = start + number * interval
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(raw, scheduled))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    for writer in opened:
        writer.close()
    return result


def _generator(args: tuple[str, str, int, float, float, int, Any]) -> Result:
    mode, url, generator, seconds, rate, connections, barrier = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    barrier.wait()
    if mode == "closed":
        return asyncio.run(_closed_loop(url, generator, connections, seconds))
    return asyncio.run(_open_loop(url, generator, rate, seconds))


def _run_phase(
    mode: str, url: str, generators: int, seconds: float, rate: float, connections: int
) -> tuple[Result, float]:
    context = multiprocessing.get_context("spawn")
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(generators + 1)
        with context.Pool(generators) as pool:
            pending = pool.map_async(
                _generator,
                [
                    (mode, url, g, seconds, rate / generators, connections, barrier)
                    for g in range(generators)
                ],
            )
            barrier.wait()
            started = time.perf_counter()
            results = pending.get(seconds + 120)
            elapsed = time.perf_counter() - started
    merged = Result()
    for result in results:
        merged.accepted += result.accepted
        merged.latencies_ms += result.latencies_ms
        for status, count in result.errors.items():
            merged.errors[status] = merged.errors.get(status, 0) + count
    return merged, elapsed


WRK_SCRIPT = r"""
-- Pre-signed requests, one per line: "<target>\t<timestamp>\t<signature>\t<body>".
-- Thread k of n keeps lines k, k+n, ...: no two threads send the same signature.
local counter = 0
function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end
function init(args)
  local n = tonumber(args[2])
  local requests, i = {}, 0
  for line in io.lines(args[1]) do
    if i % n == index then
      local target, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", target, {
        ["Content-Type"] = "application/json", ["X-Wabus-Key-Id"] = args[3],
        ["X-Wabus-Timestamp"] = ts, ["X-Wabus-Signature"] = sig }, body)
    end
    i = i + 1
  end
  pending, next_request = requests, 1
end
function request()
  local r = pending[next_request]
  next_request = next_request + 1
  return r
end
function done(summary, latency, requests)
  io.write(string.format("WRK %d %d %d %.3f %.3f %.3f\n", summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""


def _wrk_phase(url: str, threads: int, connections: int, seconds: float, cap: int) -> Result:
    """Throughput with wrk (C, so the load generator leaves the CPU to the relay): `cap`
    requests are signed beforehand (valid for the ±300 s window), each used once."""
    from relay.auth import sign_request, sign_request_v2

    with tempfile.TemporaryDirectory() as scratch:
        lines = Path(scratch) / "requests.tsv"
        now = int(time.time())
        with lines.open("w") as out:
            for number in range(cap):
                body = f'{{"to":"5511999999999","text":"wrk {number} {now}"}}'
                if _version() == 1:
                    signature = sign_request(SECRET.encode(), now, "POST", TARGET, body.encode())
                else:
                    signature = sign_request_v2(
                        SECRET.encode(), now, "POST", TARGET, None, body.encode()
                    )
                out.write(f"{TARGET}\t{now}\t{signature}\t{body}\n")
        script = Path(scratch) / "signed.lua"
        script.write_text(WRK_SCRIPT)
        command = [
            "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
            "-s", str(script), url, "--", str(lines), str(threads), KEY_ID,
        ]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    fields = next(line for line in output.splitlines() if line.startswith("WRK ")).split()
    requests, bad_status, socket_errors = int(fields[1]), int(fields[2]), int(fields[3])
    result = Result(accepted=requests - bad_status)
    if bad_status:
        result.errors[0] = bad_status
    if socket_errors:
        result.errors[-1] = socket_errors
    result.latencies_ms = [float(fields[4]), float(fields[5]), float(fields[6])]
    return result


def relay_environment(nats_url: str, port: int, api_keys: str, workers: int) -> dict[str, str]:
    """`python -m relay`'s environment in these benchmarks: loopback, the benchmark's own
    subject prefix, warnings only."""
    return os.environ | {
        "NATS_URL": nats_url,
        "PORT": str(port),
        "WABUS_HOST": "127.0.0.1",
        "WABUS_API_KEYS": api_keys,
        "WABUS_RELAY_WORKERS": str(workers),
        "WABUS_SUBJECT_PREFIX": PREFIX,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _report(name: str, result: Result, seconds: float) -> dict[str, Any]:
    latencies = result.latencies_ms
    summary = {
        "phase": name,
        "accepted": result.accepted,
        "errors": result.errors,
        "seconds": round(seconds, 2),
        "sends_per_second": round(result.accepted / seconds),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "max_ms": round(max(latencies), 2) if latencies else None,
    }
    print(json.dumps(summary), flush=True)
    return summary


def _wait_ready(url: str, relay: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.poll() is not None:
            raise RuntimeError("the relay exited at start")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("relay not ready")


async def _stored_commands(nats_url: str) -> int:
    import nats

    client = await nats.connect(nats_url)
    try:
        info = await client.jetstream().stream_info(f"{PREFIX.upper()}_COMMANDS")
        return int(info.state.messages)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="relay worker processes")
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=32, help="in flight per generator")
    parser.add_argument("--duration", type=float, default=15.0, help="throughput phase, s")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase sends/s")
    parser.add_argument("--rate-duration", type=float, default=15.0, help="latency phase, s")
    parser.add_argument(
        "--load",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="throughput load generator: wrk with pre-signed requests, or aiohttp processes",
    )
    parser.add_argument(
        "--wrk-cap",
        type=int,
        default=40000,
        help="pre-signed requests per second of run (wrk stops when they run out: the run "
        "then says so, and its rate is the cap's, not the relay's)",
    )
    parser.add_argument(
        "--signature",
        type=int,
        choices=[1, 2],
        default=2,
        help="sign v2 (one JetStream round trip per send) or v1 (two: the replay record too)",
    )
    parser.add_argument("--profile", type=Path, help="cProfile the relay (forces 1 worker)")
    parser.add_argument(
        "--express",
        type=Path,
        help="side by side: a copy of the seed's baseline folder (npm ci done); its Express API "
        "gets the same wrk load right after the relay's throughput phase",
    )
    args = parser.parse_args()
    os.environ[SIGNATURE_ENV] = str(args.signature)

    with tempfile.TemporaryDirectory() as scratch, EmbeddedNats(Path(scratch) / "nats") as server:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = relay_environment(
            server.url, port, f"{KEY_ID}:{SECRET}", 1 if args.profile else args.workers
        ) | {"WABUS_RATE_LIMIT": "0"}
        command = [sys.executable, "-m", "relay"]
        if args.profile:
            command = [sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m", "relay"]
        relay = subprocess.Popen(command, env=env, cwd=ROOT)  # noqa: S603
        try:
            _wait_ready(url, relay)
            print(
                json.dumps(
                    {
                        "relay_workers": env["WABUS_RELAY_WORKERS"],
                        "generators": args.generators,
                        "connections_per_generator": args.connections,
                        "signature": f"v{args.signature}",
                        "cpus": os.cpu_count(),
                    }
                ),
                flush=True,
            )
            warm_up, _ = _run_phase("closed", url, args.generators, 2.0, 0, args.connections)
            accepted = warm_up.accepted
            relay_pids = process_tree(relay.pid)
            nats_pid = next(
                pid for pid in process_tree(os.getpid())
                if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server"
            )  # fmt: skip
            throughput = latency = None
            capped = ""
            in_flight_at_cutoff = 0
            if args.rate_duration > 0:
                result, elapsed = _run_phase(
                    "open", url, args.generators, args.rate_duration, args.rate, 0
                )
                latency = _report(f"latency at {args.rate:g}/s", result, elapsed)
                accepted += result.accepted
            cpu_before = cpu_seconds(relay_pids), cpu_seconds([nats_pid])
            if args.duration > 0 and args.load == "wrk":
                result = _wrk_phase(
                    url,
                    args.generators,
                    args.connections * args.generators,
                    args.duration,
                    int(args.wrk_cap * args.duration),
                )
                answered = result.accepted + sum(result.errors.values())
                unsent = int(args.wrk_cap * args.duration) - answered  # or still in flight
                if unsent <= args.connections * args.generators:
                    capped = f"wrk ran out of pre-signed requests: raise --wrk-cap ({args.wrk_cap})"
                    print(json.dumps({"warning": capped}), flush=True)
                p50, p99, most = result.latencies_ms
                result.latencies_ms = []
                throughput = _report("throughput (wrk)", result, args.duration)
                throughput |= {"p50_ms": p50, "p99_ms": p99, "max_ms": most}
                print(json.dumps({"wrk_latency_ms": {"p50": p50, "p99": p99, "max": most}}))
                accepted += result.accepted
                in_flight_at_cutoff = args.connections * args.generators
            elif args.duration > 0:
                result, elapsed = _run_phase(
                    "closed", url, args.generators, args.duration, 0, args.connections
                )
                throughput = _report("throughput", result, elapsed)
                accepted += result.accepted
            if throughput:
                relay_cpu = cpu_seconds(relay_pids) - cpu_before[0]
                nats_cpu = cpu_seconds([nats_pid]) - cpu_before[1]
                sends = max(1, result.accepted)
                print(json.dumps({
                    "relay_cpu_us_per_send": round(relay_cpu / sends * 1e6),
                    "nats_server_cpu_us_per_send": round(nats_cpu / sends * 1e6),
                    "relay_cpu_seconds": round(relay_cpu, 2),
                }), flush=True)  # fmt: skip
            express = None
            if args.express and throughput:
                express = run_express(
                    args.express.resolve(),
                    args.generators,
                    args.connections * args.generators,
                    args.duration,
                )
                express["wabus_to_express_sends_ratio"] = round(
                    throughput["sends_per_second"] / max(1, express["sends_per_second"]), 2
                )
                print(json.dumps(express), flush=True)
            stored = asyncio.run(_stored_commands(server.url))
            # wrk counts only requests answered before its deadline; the ones in flight then
            # (at most one per connection) are accepted and stored all the same.
            ok = accepted <= stored <= accepted + in_flight_at_cutoff
            if express and not express["every_accepted_send_durable"]:
                ok = False  # the baseline's figure means nothing if it lost sends
            print(
                json.dumps(
                    {
                        "accepted_total": accepted,
                        "in_WA_COMMANDS": stored,
                        "unanswered_at_wrk_cutoff_max": in_flight_at_cutoff,
                        "every_accepted_send_durable": ok,
                    }
                ),
                flush=True,
            )
            if throughput and latency:
                versus = (
                    f"; {express['wabus_to_express_sends_ratio']}x the Express API's sends/s "
                    f"(target >= 2), its sends durable: {express['every_accepted_send_durable']}"
                    if express
                    else ""
                )
                print(
                    f"summary ({env['WABUS_RELAY_WORKERS']} relay worker(s)): "
                    f"{throughput['sends_per_second']} signed sends/s, "
                    f"{round(relay_cpu / sends * 1e6)} us of relay CPU per send (target <= 150 "
                    f"on one worker); p99 {latency['p99_ms']} ms at {args.rate:g}/s "
                    f"(target <= 15); durable: {ok}{versus}"
                    + (f"; NOT the relay's rate: {capped}" if capped else ""),
                    flush=True,
                )
        finally:
            # SIGINT: uvicorn re-raises the signal it caught, and only an interrupt (not a
            # SIGTERM) lets cProfile write its file on the way out.
            relay.send_signal(signal.SIGINT)
            relay.wait(30)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
