"""The Node design's Express API (helmet, CORS, rate limiter, `x-api-key`, BullMQ on Redis), run
beside the relay in the same benchmark run: absolute rates on a shared machine swing by 2x from
one run to the next, a ratio measured minutes apart on the same machine holds.

`--express DIR` names a copy of the seed's baseline folder with its `npm ci` done (the original
is read-only). A private `redis-server` is started on a free port, then `node api.mjs`, then wrk
with the folder's `send.lua` and the relay's thread and connection counts. Every `202` must be a
job in the BullMQ queue: the queue's job counter is read back from Redis at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from procfs import cpu_seconds, process_tree

from wabus.embedded import free_port


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} is needed for the side-by-side run (Debian: redis, nodejs, wrk)"
        )
    return found


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def _jobs_added(redis_port: int) -> int:
    """The BullMQ queue's job counter (`bull:<queue>:id`): one per `queue.add`."""
    cli = [_tool("redis-cli"), "-p", str(redis_port)]
    keys = subprocess.run(  # noqa: S603
        [*cli, "--scan", "--pattern", "bull:*:id"], capture_output=True, text=True, check=True
    ).stdout.split()
    return sum(
        int(subprocess.run([*cli, "GET", key], capture_output=True, text=True, check=True).stdout)  # noqa: S603
        for key in keys
    )


def run_express(folder: Path, threads: int, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk phase against the Express API; its rate, latency, CPU per send and durability."""
    redis_port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        redis = subprocess.Popen(  # noqa: S603
            [_tool("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", scratch],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        api = None
        try:
            _wait_port(redis_port, redis)
            api = subprocess.Popen(  # noqa: S603
                [_tool("node"), "api.mjs", str(api_port)],
                cwd=folder,
                env=os.environ | {"REDIS_PORT": str(redis_port)},
            )
            _wait_port(api_port, api)
            pids = [*process_tree(api.pid), redis.pid]
            before = cpu_seconds(pids)
            output = subprocess.run(  # noqa: S603
                [_tool("wrk"), "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
                 "--latency", "-s", str(folder / "send.lua"),
                 f"http://127.0.0.1:{api_port}/api/send"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            cpu = cpu_seconds(pids) - before
            time.sleep(0.5)  # the jobs of requests still in flight at wrk's deadline
            stored = _jobs_added(redis_port)
        finally:
            for process in (api, redis):
                if process is not None:
                    process.terminate()
                    process.wait(10)
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    accepted = requests - (int(failed.group(1)) if failed else 0)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "phase": "express baseline (wrk)",
        "accepted": accepted,
        "sends_per_second": round(accepted / seconds),
        "p99_ms": round(float(p99.group(1)) * scale[p99.group(2)], 2) if p99 else None,
        "node_and_redis_cpu_us_per_send": round(cpu / max(1, accepted) * 1e6),
        "jobs_in_queue": stored,
        "every_accepted_send_durable": accepted <= stored <= accepted + connections,
    }
