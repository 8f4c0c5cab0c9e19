"""Benchmark: the scaling figures (issue 15, parts 4 and 5); not a test, run it by hand.

Each part starts its own embedded nats-server and services as processes on free ports, prints a
small table (and `--json` one JSON object), and stops everything it started, also on failure.
The machine's load average at the start is printed with each table: on a shared machine the
CPU and throughput figures are noisy, so compare the ratios taken within one run.

    python bench/scale_out.py sessions              # 0, 10 and 500 sim sessions in one connector
    python bench/scale_out.py relays                # 1, 2, 3 relays, three webhook endpoints
    python bench/scale_out.py neonize --clients 100 --rounds 3  # neonize clients, offline

- **sessions**: nats-server, one relay and one connector (`WABUS_ENGINE=sim`); instances are
  written to the configuration bucket (as the relay's API does) in steps (`--steps 10,500`) and
  each step waits until every session is open. At 0 sessions and after each step, after
  `--settle` s: the resident memory of nats-server, the connector and the relay (the stack's
  total), the connector's threads, and the idle CPU of each over `--idle` s (from /proc).
- **relays**: for each size (`--sizes 1,2,3`) a fresh subject prefix, that many relay processes
  (one worker each), three instances created through the signed API each with its own webhook
  endpoint (all pointing at one receiver process, bench/webhook_delivery.py's), then
  `--events` events over `--chats` chats per instance published straight into `WA_EVENTS`. The
  receiver counts delivered, missing, duplicates and per-chat order violations; the lease
  bucket tells which relay holds which endpoint. Then one wrk per relay (pre-signed requests,
  bench/relay_sends.py's script) for `--send-seconds`: signed sends/s at that size, CPU per
  send from /proc.
- **neonize**: `--clients` neonize clients (whatsmeow over Go) built in this process against
  one SQLite file each, then each asked to connect (this machine cannot reach WhatsApp: the
  dial fails) `--rounds` times; resident memory, threads and open files after each stage, CPU
  per client and connect attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procfs import cpu_seconds, process_tree, rss_mb  # noqa: E402 - beside this script
from relay_sends import KEY_ID, SECRET, TARGET, WRK_SCRIPT  # noqa: E402
from webhook_delivery import (  # noqa: E402
    _await_deliveries,
    _checks,
    _detailed_stats,
    _ensure_streams,
    _event,
    _post,
    _publish_backlog,
    _stop,
    _tail,
    _wait_ready,
    start_receiver,
)

from wabus.embedded import EmbeddedNats, free_port  # noqa: E402
from wabus.logs import configure_logging  # noqa: E402
from wabus.settings import LogFormat  # noqa: E402

EVENT_TYPE = "message.received"


def _log(message: str) -> None:
    print(f"scale: {message}", file=sys.stderr, flush=True)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _open_files(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title]
    for number, row in enumerate(cells):
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if number == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _Stack:
    """nats-server and services started as processes; everything stopped on the way out."""

    def __init__(self, cleanup: contextlib.ExitStack, scratch: Path) -> None:
        self.cleanup = cleanup
        self.scratch = scratch
        server = cleanup.enter_context(EmbeddedNats(scratch / "nats"))
        self.nats_url = server.url
        self.nats_pid = next(
            pid
            for pid in process_tree(os.getpid())
            if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server"
        )
        self.started = 0

    def service(self, module: str, prefix: str, extra: dict[str, str]) -> tuple[Any, str, Path]:
        """`python -m <module>` on a free port with the bench's NATS and `prefix`; its
        process, URL and log file."""
        self.started += 1
        port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("WABUS_", "NATS_")) and key != "DATABASE_URL"
        } | {
            "NATS_URL": self.nats_url,
            "WABUS_SUBJECT_PREFIX": prefix,
            "WABUS_HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            **extra,
        }
        log_path = self.scratch / f"{module}-{self.started}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(  # noqa: S603 - this Python, `-m <module>`
                [sys.executable, "-m", module],
                env=environment,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.cleanup.callback(_stop, process)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
        except Exception:  # whatever stopped it: show its log, then let it through
            _log(f"{module} log:\n" + _tail(log_path))
            raise
        return process, url, log_path


def _relay_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "WABUS_API_KEYS": f"{KEY_ID}:{SECRET}",
        "WABUS_RELAY_WORKERS": "1",
        "WABUS_RATE_LIMIT": "0",
        "WABUS_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
        **(extra or {}),
    }


def _idle(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """CPU cores each group used over `seconds` of doing nothing asked of it."""
    before = {name: cpu_seconds(group) for name, group in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(group) - before[name]) / seconds for name, group in pids.items()}


# part 5: sessions per connector


async def _create_instances(nats_url: str, prefix: str, names: list[str]) -> None:
    import nats

    from schemas.envelope import utc_now
    from schemas.instances import InstanceConfig
    from wabus.buckets import open_instance_buckets
    from wabus.settings import Settings

    topology = Settings(nats_url=nats_url, subject_prefix=prefix).topology
    client = await nats.connect(nats_url)
    try:
        config = (await open_instance_buckets(client.jetstream(), topology)).config
        now = utc_now()
        for name in names:
            instance = InstanceConfig(
                id=name, desired_state="running", created_at=now, updated_at=now
            )
            await config.put(name, instance.model_dump_json().encode())
    finally:
        await client.close()


async def _open_sessions(nats_url: str, prefix: str) -> int:
    import nats
    from nats.js.errors import NoKeysError

    from schemas.instances import InstanceStatus
    from wabus.settings import Settings

    topology = Settings(nats_url=nats_url, subject_prefix=prefix).topology
    client = await nats.connect(nats_url)
    try:
        kv = await client.jetstream().key_value(topology.status_bucket)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return 0
        entries = await asyncio.gather(*(kv.get(key) for key in keys), return_exceptions=True)
        return sum(
            1
            for entry in entries
            if not isinstance(entry, BaseException)
            and entry.value
            and InstanceStatus.model_validate_json(entry.value).state.value == "open"
        )
    finally:
        await client.close()


def _sessions(options: argparse.Namespace, stack: _Stack) -> dict[str, Any]:
    steps = [int(s) for s in options.steps.split(",")]
    prefix = "bsc" + secrets.token_hex(3)
    asyncio.run(_ensure_streams(stack.nats_url, prefix))
    connector, _, connector_log = stack.service(
        "connector",
        prefix,
        {
            "WABUS_ENGINE": "sim",
            "WABUS_MAX_SESSIONS": str(max(steps) + 10),
            "WABUS_DATA_DIR": str(stack.scratch / "connector"),
        },
    )
    relay, _, _ = stack.service("relay", prefix, _relay_env())
    groups = {
        "nats-server": [stack.nats_pid],
        "connector": process_tree(connector.pid),
        "relay": process_tree(relay.pid),
    }
    rows: list[dict[str, Any]] = []

    def measure(sessions: int, open_seconds: float | None) -> None:
        time.sleep(options.settle)
        memory = {name: round(rss_mb(pids), 1) for name, pids in groups.items()}
        cores = _idle(groups, options.idle)
        row = {
            "sessions": sessions,
            "open_s": None if open_seconds is None else round(open_seconds, 1),
            "rss_mb": memory,
            "stack_rss_mb": round(sum(memory.values()), 1),
            "connector_threads": _threads(connector.pid),
            "idle_cores": {name: round(value, 4) for name, value in cores.items()},
        }
        rows.append(row)
        _log(json.dumps(row))

    measure(0, None)
    created = 0
    for step in steps:
        names = [f"s{n:04d}" for n in range(created, step)]
        began = time.monotonic()
        asyncio.run(_create_instances(stack.nats_url, prefix, names))
        deadline = began + options.timeout
        while (opened := asyncio.run(_open_sessions(stack.nats_url, prefix))) < step:
            if connector.poll() is not None or time.monotonic() > deadline:
                _log("connector log:\n" + _tail(connector_log))
                raise RuntimeError(f"{opened} of {step} sessions open")
            time.sleep(0.5)
        created = step
        measure(step, time.monotonic() - began)

    base, top = rows[0], rows[-1]
    added = top["sessions"] - base["sessions"]
    per_session = {
        "connector_rss_kb": round(
            (top["rss_mb"]["connector"] - base["rss_mb"]["connector"]) * 1024 / added, 1
        ),
        "nats_rss_kb": round(
            (top["rss_mb"]["nats-server"] - base["rss_mb"]["nats-server"]) * 1024 / added, 1
        ),
        "connector_idle_millicores": round(
            (top["idle_cores"]["connector"] - base["idle_cores"]["connector"]) * 1000 / added, 3
        ),
        "nats_idle_millicores": round(
            (top["idle_cores"]["nats-server"] - base["idle_cores"]["nats-server"]) * 1000 / added,
            3,
        ),
    }
    table = _table(
        f"sessions (sim engine), one connector; idle CPU over {options.idle:g} s; "
        f"load average at start {options.load}",
        [
            "sessions",
            "open in s",
            "nats MB",
            "connector MB",
            "relay MB",
            "stack MB",
            "threads",
            "nats cores",
            "connector cores",
            "relay cores",
        ],
        [
            [
                r["sessions"],
                r["open_s"] if r["open_s"] is not None else "-",
                r["rss_mb"]["nats-server"],
                r["rss_mb"]["connector"],
                r["rss_mb"]["relay"],
                r["stack_rss_mb"],
                r["connector_threads"],
                r["idle_cores"]["nats-server"],
                r["idle_cores"]["connector"],
                r["idle_cores"]["relay"],
            ]
            for r in rows
        ],
    )
    table += f"\n  per session ({base['sessions']} → {top['sessions']}): {per_session}"
    return {"steps": rows, "per_session": per_session, "table": table}


# part 4: relays scale


async def _create_endpoints(
    relay_url: str, instances: list[str], receiver: str, secret: str
) -> None:
    from relay.client import RelayClient

    client = RelayClient(relay_url, KEY_ID, SECRET)
    for instance in instances:
        webhook = {"id": "hook", "url": f"{receiver}/hook/{instance}", "secret": secret}
        await client.create_instance(instance, webhooks=[webhook])


async def _lease_holders(nats_url: str, prefix: str) -> dict[str, str]:
    import nats
    from nats.js.errors import NoKeysError

    from wabus.settings import Settings

    topology = Settings(nats_url=nats_url, subject_prefix=prefix).topology
    client = await nats.connect(nats_url)
    try:
        try:
            kv = await client.jetstream().key_value(topology.webhook_leases_bucket)
            keys = await kv.keys()
        except NoKeysError:
            return {}
        holders = {}
        for key in keys:
            entry = await kv.get(key)
            holder = json.loads(entry.value or b"{}").get("holder")
            if holder:
                holders[key] = str(holder)
        return holders
    finally:
        await client.close()


def _sign_requests(path: Path, count: int, relay: int) -> None:
    from relay.auth import sign_request

    now = int(time.time())
    with path.open("w") as out:
        for number in range(count):
            body = f'{{"to":"5511999999999","text":"scale {relay} {number} {now}"}}'
            signature = sign_request(SECRET.encode(), now, "POST", TARGET, body.encode())
            out.write(f"{TARGET}\t{now}\t{signature}\t{body}\n")


def _wrk_all(urls: list[str], options: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """One wrk per relay, started together, each with its own pre-signed requests."""
    script = scratch / "signed.lua"
    script.write_text(WRK_SCRIPT)
    files = []
    for number in range(len(urls)):
        path = scratch / f"requests-{number}.tsv"
        _sign_requests(path, int(options.wrk_cap * options.send_seconds), number)
        files.append(path)
    processes = []
    for url, path in zip(urls, files, strict=True):
        command = [
            "wrk",
            "-t",
            "1",
            "-c",
            str(options.connections),
            "-d",
            f"{options.send_seconds:g}s",
            "-s",
            str(script),
            url,
            "--",
            str(path),
            "1",
            KEY_ID,
        ]
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
        )
    results = []
    for process in processes:
        try:
            output, errors = process.communicate(timeout=options.send_seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, errors = process.communicate()
        line = next((x for x in output.splitlines() if x.startswith("WRK ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no result: {errors.strip()[-500:]}")
        fields = line.split()
        results.append(
            {
                "answered": int(fields[1]),
                "bad_status": int(fields[2]),
                "socket_errors": int(fields[3]),
                "p50_ms": float(fields[4]),
                "p99_ms": float(fields[5]),
                # wrk stops when they run out: the rate is then the cap's, not the relay's
                "ran_out_of_signed_requests": int(fields[1]) + options.connections
                >= int(options.wrk_cap * options.send_seconds),
            }
        )
    return results


def _relay_size(
    size: int, options: argparse.Namespace, stack: _Stack, receiver: str, secret: str
) -> dict[str, Any]:
    prefix = f"brl{size}" + secrets.token_hex(3)
    asyncio.run(_ensure_streams(stack.nats_url, prefix))
    relays = [stack.service("relay", prefix, _relay_env()) for _ in range(size)]
    instances = [f"i{size}{letter}" for letter in "abc"]
    asyncio.run(_create_endpoints(relays[0][1], instances, receiver, secret))
    pids = {relay.pid: number for number, (relay, _, _) in enumerate(relays)}
    deadline = time.monotonic() + 60
    spread = min(size, len(instances))  # the shares: every relay holds one, or more
    while True:  # until every endpoint is held and shared out
        holders = asyncio.run(_lease_holders(stack.nats_url, prefix))
        if len(holders) == len(instances) and len(set(holders.values())) >= spread:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"endpoints not shared out among {size} relays: {holders}")
        time.sleep(0.2)
    by_endpoint = {
        key: pids.get(int(holder.split("-")[-2]), -1) + 1 for key, holder in holders.items()
    }

    events: list[tuple[str, bytes]] = []
    subjects: list[str] = []
    for instance in instances:
        for number in range(options.events // len(instances)):
            chat = number % options.chats
            events.append(_event(chat, number // options.chats, instance + "-", instance))
            subjects.append(f"{prefix}.evt.{instance}.{EVENT_TYPE}")
    expected = {event_id for event_id, _ in events}
    _post(receiver + "/reset")
    relay_pids = [pid for relay, _, _ in relays for pid in process_tree(relay.pid)]
    cpu_before, nats_before = cpu_seconds(relay_pids), cpu_seconds([stack.nats_pid])
    began = time.monotonic()
    refused = 0
    for instance in instances:
        subject = f"{prefix}.evt.{instance}.{EVENT_TYPE}"
        mine = [e for e, s in zip(events, subjects, strict=True) if s == subject]
        refused += asyncio.run(_publish_backlog(stack.nats_url, subject, mine))
    _await_deliveries(receiver, expected, options.timeout, relays[0][0], f"{size} relays")
    seconds = time.monotonic() - began
    relay_cpu = cpu_seconds(relay_pids) - cpu_before
    nats_cpu = cpu_seconds([stack.nats_pid]) - nats_before
    stats = _detailed_stats(receiver)
    times: list[float] = stats["times"]
    checks = _checks(stats, expected)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    low, high = int(0.1 * len(times)), int(0.9 * len(times)) - 1
    middle = (high - low) / (times[high] - times[low]) if high > low else None
    delivered = max(1, checks["delivered"])

    cpu_before = cpu_seconds(relay_pids)
    sends = _wrk_all([url for _, url, _ in relays], options, stack.scratch)
    send_cpu = cpu_seconds(relay_pids) - cpu_before
    accepted = sum(r["answered"] - r["bad_status"] for r in sends)
    for relay, _, _ in relays:
        _stop(relay)
    return {
        "relays": size,
        "endpoint_holders": by_endpoint,
        "relays_delivering": len(set(by_endpoint.values())),
        "events": len(expected),
        "stream_refused": refused,
        "events_per_second": round(rate) if rate else None,
        "events_per_second_middle_80": round(middle) if middle else None,
        "publish_to_last_s": round(seconds, 2),
        "delivered": checks["delivered"],
        "missing": checks["missing"],
        "duplicates": checks["duplicates"],
        "order_violations": checks["order_violations"],
        "signature_failures": checks["signature_failures"],
        "relay_cpu_us_per_event": round(relay_cpu / delivered * 1e6),
        "nats_cpu_us_per_event": round(nats_cpu / delivered * 1e6),
        "sends_per_second": round(accepted / options.send_seconds),
        "sends_per_relay": [
            round((r["answered"] - r["bad_status"]) / options.send_seconds) for r in sends
        ],
        "send_errors": sum(r["bad_status"] + r["socket_errors"] for r in sends),
        "send_p99_ms_max": max(r["p99_ms"] for r in sends),
        "send_rate_capped_by_wrk_cap": any(r["ran_out_of_signed_requests"] for r in sends),
        "relay_cpu_us_per_send": round(send_cpu / max(1, accepted) * 1e6),
    }


def _start_receiver(stack: _Stack) -> tuple[str, str]:
    from relay.webhooks.signature import new_secret

    secret = new_secret()
    receiver, _ = start_receiver(stack.cleanup, secret, "scale-receiver")
    return receiver, secret


def _relays(options: argparse.Namespace, stack: _Stack) -> dict[str, Any]:
    receiver, secret = _start_receiver(stack)
    rows = []
    for size in (int(s) for s in options.sizes.split(",")):
        _log(f"{size} relay(s)")
        rows.append(_relay_size(size, options, stack, receiver, secret))
        _log(json.dumps(rows[-1]))
    first = rows[0]
    table = _table(
        f"relays, three endpoints (one per instance), {options.events:,} events over "
        f"{options.chats} chats per instance; load average at start {options.load}",
        [
            "relays",
            "delivering",
            "events/s",
            "× first",
            "missing",
            "dup",
            "out of order",
            "µs CPU/event",
            "sends/s",
            "× first",
            "per relay",
            "µs CPU/send",
        ],
        [
            [
                r["relays"],
                r["relays_delivering"],
                r["events_per_second"],
                _ratio(r["events_per_second"], first["events_per_second"]),
                r["missing"],
                r["duplicates"],
                r["order_violations"],
                r["relay_cpu_us_per_event"],
                r["sends_per_second"],
                _ratio(r["sends_per_second"], first["sends_per_second"]),
                "/".join(str(s) for s in r["sends_per_relay"]),
                r["relay_cpu_us_per_send"],
            ]
            for r in rows
        ],
    )
    table += "\n  endpoint → relay holding its lease: " + "; ".join(
        f"{r['relays']} relays: "
        + ", ".join(f"{k} → {v}" for k, v in r["endpoint_holders"].items())
        for r in rows
    )
    return {"sizes": rows, "table": table}


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value and base else "-"


# part 5: the neonize engine's cost per client


def _self_reading(pid: int) -> dict[str, float]:
    return {
        "rss_mb": round(rss_mb([pid]), 1),
        "threads": _threads(pid),
        "open_files": _open_files(pid),
        "cpu_s": round(cpu_seconds([pid]), 3),
    }


async def _neonize_clients(clients: int, rounds: int, folder: str) -> list[dict[str, Any]]:
    """In a process of its own: import neonize, then per round a new client per instance (as
    the engine builds one per connect attempt, on one SQLite file per instance), all asked to
    connect at once; each attempt fails offline, then its client is stopped."""
    from concurrent.futures import ThreadPoolExecutor

    pid = os.getpid()
    readings = [{"stage": "python, wabus imported", **_self_reading(pid)}]
    from connector.engines.neonize_lib import NeonizeClient, quiet_library_logs

    readings.append({"stage": "neonize imported", **_self_reading(pid)})
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=clients + 8, thread_name_prefix="bench-neonize")
    )
    quiet_library_logs()
    kept = [NeonizeClient(f"{folder}/c{n}.db", secrets.token_hex(8)) for n in range(clients)]
    readings.append({"stage": f"{clients} clients built", **_self_reading(pid)})

    async def attempt(client: Any) -> str:
        try:
            task = await client.connect()
            await asyncio.wait_for(task, 60)
        except Exception as error:  # the expected outcome offline: recorded, not raised
            outcome = type(error).__name__ + ": " + str(error)[:28]
        else:
            outcome = "connected"
        if client.stoppable:
            try:
                await client.stop()
            except Exception as error:  # beside the point here, but shown
                _log(f"stopping a neonize client failed: {error!r}")
        return outcome

    for number in range(rounds):
        clients_now = (
            kept
            if number == 0
            else [NeonizeClient(f"{folder}/c{n}.db", secrets.token_hex(8)) for n in range(clients)]
        )
        began = time.monotonic()
        outcomes = await asyncio.gather(*(attempt(client) for client in clients_now))
        kinds: dict[str, int] = {}
        for outcome in outcomes:
            kinds[outcome] = kinds.get(outcome, 0) + 1
        await asyncio.sleep(1)
        readings.append(
            {
                "stage": f"connect round {number + 1}",
                "seconds": round(time.monotonic() - began - 1, 2),
                "outcomes": kinds,
                **_self_reading(pid),
            }
        )
    return readings


def _neonize_child(clients: int, rounds: int, folder: str) -> list[dict[str, Any]]:
    return asyncio.run(_neonize_clients(clients, rounds, folder))


def _neonize(options: argparse.Namespace, stack: _Stack | None) -> dict[str, Any]:
    import multiprocessing

    del stack
    folder = tempfile.mkdtemp(prefix="scale-neonize-")
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            readings = pool.apply(_neonize_child, (options.clients, options.rounds, folder))
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    imported, built = readings[1], readings[2]
    last = readings[-1]
    per_client = {
        "import_mb": round(imported["rss_mb"] - readings[0]["rss_mb"], 1),
        "built_kb": round((built["rss_mb"] - imported["rss_mb"]) * 1024 / options.clients, 1),
        "after_rounds_kb": round((last["rss_mb"] - imported["rss_mb"]) * 1024 / options.clients, 1),
        "threads_after_rounds": last["threads"] - imported["threads"],
        "open_files_per_client": round(
            (last["open_files"] - imported["open_files"]) / options.clients, 2
        ),
        "cpu_ms_per_attempt": round(
            (last["cpu_s"] - built["cpu_s"]) * 1000 / (options.clients * options.rounds), 2
        ),
    }
    table = _table(
        f"neonize {options.clients} clients in one process (offline); "
        f"load average at start {options.load}",
        ["stage", "s", "RSS MB", "threads", "open files", "CPU s", "outcomes"],
        [
            [
                r["stage"],
                r.get("seconds", "-"),
                r["rss_mb"],
                r["threads"],
                r["open_files"],
                r["cpu_s"],
                r.get("outcomes", ""),
            ]
            for r in readings
        ],
    )
    table += f"\n  per client: {per_client}"
    return {"stages": readings, "per_client": per_client, "table": table}


PARTS: dict[str, Callable[[argparse.Namespace, Any], dict[str, Any]]] = {
    "sessions": _sessions,
    "relays": _relays,
    "neonize": _neonize,
}


def _interrupted(number: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=list(PARTS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--timeout", type=float, default=180.0, help="per wait, s")
    sessions = parser.add_argument_group("sessions")
    sessions.add_argument("--steps", default="10,500", help="sessions open at each step")
    sessions.add_argument("--settle", type=float, default=5.0, help="s before measuring")
    sessions.add_argument("--idle", type=float, default=30.0, help="idle CPU window, s")
    relays = parser.add_argument_group("relays")
    relays.add_argument("--sizes", default="1,2,3", help="relay counts")
    relays.add_argument("--events", type=int, default=30_000, help="per size, all instances")
    relays.add_argument("--chats", type=int, default=100, help="chats per instance")
    relays.add_argument("--send-seconds", type=float, default=8.0, help="wrk per size, s")
    relays.add_argument("--connections", type=int, default=16, help="wrk connections per relay")
    relays.add_argument("--wrk-cap", type=int, default=40_000, help="pre-signed per s per relay")
    neonize = parser.add_argument_group("neonize")
    neonize.add_argument("--clients", type=int, default=50, help="neonize clients")
    neonize.add_argument("--rounds", type=int, default=3, help="connect attempts per client")
    options = parser.parse_args()
    options.load = _load()

    configure_logging("WARNING", LogFormat.CONSOLE)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        with contextlib.ExitStack() as cleanup:
            scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="scale-")))
            stack = None if options.part == "neonize" else _Stack(cleanup, scratch)
            report = PARTS[options.part](options, stack)
    except KeyboardInterrupt:
        _log("interrupted; everything started was stopped")
        sys.exit(130)
    report["load_average_at_start"] = options.load
    report["cpus"] = os.cpu_count()
    print(report["table"], flush=True)
    if options.json:
        print(json.dumps({k: v for k, v in report.items() if k != "table"}), flush=True)


if __name__ == "__main__":
    main()
