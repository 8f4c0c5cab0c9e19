"""Benchmark: webhook delivery from `WA_EVENTS` to a local receiver (not a test; run it by hand).

Starts an embedded nats-server and a minimal webhook receiver (a raw asyncio HTTP/1.1 keep-alive
server in a process of its own, answering 204), then measures, against that same receiver:

1. **bare loop**: a plain aiohttp POST loop (its own process, `--concurrency` requests in flight,
   keep-alive, ~500-byte bodies like the events') for `--duration` s after a 1 s warm-up: what
   this machine's HTTP stack gives with no NATS, no signing and no log;
2. **throughput**: `--events` events spread over `--chats` chats are published to `WA_EVENTS`
   *before* the relay starts, then one relay process (`python -m relay`, one worker) delivers
   the backlog; the rate is taken from the receiver's arrival times, first to last and over the
   middle 80 % of deliveries;
3. **latency**: with the backlog drained, the same relay gets events published open-loop at
   `--rate` per second for `--rate-duration` s; latency is publish → arrival at the receiver
   (one machine, one clock), also reported from each event's *scheduled* time.

The receiver records every request's `webhook-id` and arrival time, counts unique ids and
duplicates, checks per-chat order (each event's text is `<chat>#<n>`, n rising per chat) and
verifies the first and then every 100th signature with the official `standardwebhooks` library.
The relay's resident memory (its whole process tree) is sampled every 0.5 s, and the CPU every
process used during the throughput phase is reported (in cores, and per event for the relay,
nats-server and the receiver), so a busy machine shows in the figures. `--profile FILE` runs the
relay under cProfile.

With `--database-url` (or `DATABASE_URL`) the relay keeps its delivery log in a throwaway
database `wabus_bench_<random>` created on that server and dropped (`WITH (FORCE)`) at the end.

The script relies only on the relay's public contract (its environment variables, `/readyz`,
Standard Webhooks headers), so it measures any version of the delivery worker.

    python bench/webhook_delivery.py                       # 100,000 events, 1,000/s for 15 s
    python bench/webhook_delivery.py --events 20000 --duration 5 --rate-duration 5 --json
    DATABASE_URL=postgresql://user@host:5432/db python bench/webhook_delivery.py

Exits 1 when an event never arrived (or the relay did not start), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procfs import process_stats, process_tree, rss_mb  # noqa: E402 - beside this script

from relay.webhooks.signature import new_secret  # noqa: E402
from schemas.envelope import encode, make_event  # noqa: E402
from schemas.events import MessageReceived  # noqa: E402
from wabus.embedded import EmbeddedNats, free_port  # noqa: E402
from wabus.logs import configure_logging  # noqa: E402
from wabus.settings import LogFormat, Settings  # noqa: E402

INSTANCE = "bench"
EVENT_TYPE = "message.received"
VERIFY_EVERY = 100
BARE_WARM_UP = 1.0
TARGETS = {  # what the team must meet; measured and reported, never enforced
    "events_per_second": 8000.0,
    "ratio_to_bare_loop": 0.6,
    "p99_ms": 10.0,
    "relay_rss_mb": 150.0,
}

T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed (the relay runs on it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# events


def _event(chat: int, number: int, tag: str, instance: str = INSTANCE) -> tuple[str, bytes]:
    """One `message.received` envelope (~510 bytes) whose text is `<tag><chat>#<number>`."""
    jid = f"55119{chat:08d}@s.whatsapp.net"
    data = MessageReceived.model_validate(
        {
            "message_id": f"3EB0{tag.upper()}{chat:05d}{number:09d}",
            "chat": jid,
            "from": jid,
            "from_me": False,
            "type": "text",
            "text": f"{tag}{chat}#{number}",
            "push_name": "Bench Sender",
            "timestamp": datetime.now(UTC),
        }
    )
    envelope = make_event(instance, data)
    return envelope.id, encode(envelope)


# the receiver, in a process of its own: raw asyncio HTTP/1.1, keep-alive, 204 No Content

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class _Receiver:
    """Every webhook request's arrival, checked as it comes; a control API reads and resets it."""

    def __init__(self, secret: str) -> None:
        from standardwebhooks import Webhook

        self.verifier = Webhook(secret)
        self.connections = 0
        self.open = 0
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.first: dict[str, float] = {}  # webhook-id → first arrival; insertion = arrival order
        self.duplicates = 0
        self.duplicate_ids: set[str] = set()
        self.last_in_chat: dict[str, int] = {}
        self.order_violations = 0
        self.unsigned = 0
        self.signed = 0
        self.verified = 0
        self.signature_failures = 0
        self.malformed = 0
        self.cpu_at_reset = time.process_time()
        self.connections_at_reset = self.connections
        self.max_open = self.open

    def webhook(self, headers: dict[bytes, bytes], body: bytes) -> None:
        now = time.time()
        self.requests += 1
        raw_id = headers.get(b"webhook-id")
        if raw_id is None:
            self.malformed += 1
            return
        event_id = raw_id.decode()
        if event_id in self.first:
            self.duplicates += 1
            self.duplicate_ids.add(event_id)
        else:
            self.first[event_id] = now
        try:
            chat, _, number = json.loads(body)["data"]["text"].rpartition("#")
            sequence = int(number)
        except (ValueError, KeyError, TypeError, AttributeError):
            self.malformed += 1
        else:
            if sequence < self.last_in_chat.get(chat, -1):
                self.order_violations += 1
            else:
                self.last_in_chat[chat] = sequence
        if b"webhook-signature" not in headers:
            self.unsigned += 1
            return
        self.signed += 1
        if self.signed % VERIFY_EVERY == 1:  # the first, then every 100th
            self.verified += 1
            try:
                self.verifier.verify(body, {k.decode(): v.decode() for k, v in headers.items()})
            except Exception:  # any failure to verify is what this counts
                self.signature_failures += 1

    def stats(self, detail: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "requests": self.requests,
            "unique": len(self.first),
            "duplicates": self.duplicates,
            "duplicate_ids": len(self.duplicate_ids),
            "order_violations": self.order_violations,
            "unsigned": self.unsigned,
            "signatures_verified": self.verified,
            "signature_failures": self.signature_failures,
            "malformed": self.malformed,
            "cpu_seconds": time.process_time() - self.cpu_at_reset,
            "connections_opened": self.connections - self.connections_at_reset,
            "max_open_connections": self.max_open,
        }
        if detail:
            answer["ids"] = list(self.first)
            answer["times"] = list(self.first.values())
        return answer

    def handle(
        self, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> bytes:
        if method == b"POST" and target.startswith(b"/hook"):
            self.webhook(headers, body)
            return NO_CONTENT
        if method == b"GET" and target.startswith(b"/stats"):
            payload = json.dumps(self.stats(b"detail=1" in target)).encode()
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(payload) + payload
            )
        if method == b"POST" and target.startswith(b"/reset"):
            self.reset()
            return NO_CONTENT
        return NOT_FOUND


def _dechunk(buffer: bytearray, position: int) -> tuple[bytes, int] | None:
    """A chunked body starting at `position`: (body, end), or None while it is incomplete."""
    parts: list[bytes] = []
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2
        if size == 0:  # then optional trailers and an empty line
            if buffer[position : position + 2] == b"\r\n":
                return b"".join(parts), position + 2
            end = buffer.find(b"\r\n\r\n", position)
            return None if end < 0 else (b"".join(parts), end + 4)
        if len(buffer) < position + size + 2:
            return None
        parts.append(bytes(buffer[position : position + size]))
        position += size + 2


def _parse(buffer: bytearray) -> tuple[bytes, bytes, dict[bytes, bytes], bytes, bool] | None:
    """Take one complete request off `buffer`: method, target, headers, body, keep-alive."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    method, _, rest = lines[0].partition(b" ")
    target = rest.rpartition(b" ")[0]
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunked = _dechunk(buffer, start)
        if chunked is None:
            return None
        body, stop = chunked
    else:
        stop = start + int(headers.get(b"content-length", b"0"))
        if len(buffer) < stop:
            return None
        body = bytes(buffer[start:stop])
    del buffer[:stop]
    return method, target, headers, body, headers.get(b"connection", b"").lower() != b"close"


class _Connection(asyncio.Protocol):
    def __init__(self, receiver: _Receiver) -> None:
        self.receiver = receiver
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        receiver = self.receiver
        receiver.connections += 1
        receiver.open += 1
        receiver.max_open = max(receiver.max_open, receiver.open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver.open -= 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            try:
                request = _parse(self.buffer)
            except ValueError:  # not HTTP we understand
                self.transport.close()
                return
            if request is None:
                return
            method, target, headers, body, keep_alive = request
            self.transport.write(self.receiver.handle(method, target, headers, body))
            if not keep_alive:
                self.transport.close()
                return


def _ignore_sigint() -> None:
    """Child processes leave Ctrl-C to the parent, which stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _receiver_process(port: int, secret: str) -> None:
    _ignore_sigint()

    async def serve() -> None:
        receiver = _Receiver(secret)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(receiver), "127.0.0.1", port, backlog=4096
        )
        async with server:
            await server.serve_forever()

    _run(serve())


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - loopback http
        result: dict[str, Any] = json.loads(answer.read())
        return result


def _post(url: str) -> None:
    request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        answer.read()


# the bare POST loop, in a process of its own


def _bare_loop(url: str, concurrency: int, seconds: float, head: bytes, tail: bytes) -> Any:
    return _run(_bare(url, concurrency, seconds, head, tail))


async def _bare(
    url: str, concurrency: int, seconds: float, head: bytes, tail: bytes
) -> dict[str, Any]:
    import aiohttp

    clock = time.perf_counter
    measure_from = clock() + BARE_WARM_UP
    stop = measure_from + seconds
    counted = errors = 0
    timestamp = str(int(time.time()))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(number: int) -> None:
            nonlocal counted, errors
            sequence = 0
            while clock() < stop:
                body = head + f"bare{number}#{sequence}".encode() + tail
                headers = {
                    "webhook-id": f"bare_{number}_{sequence}",
                    "webhook-timestamp": timestamp,
                    "content-type": "application/json",
                }
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
                sequence += 1
                if measure_from <= clock() <= stop:
                    counted += 1
                    errors += not ok

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return {"requests": counted, "errors": errors, "seconds": seconds}


# publishing


async def _publish_backlog(nats_url: str, subject: str, events: list[tuple[str, bytes]]) -> int:
    """Publish everything pipelined (acks awaited together); how many the stream refused."""
    import nats

    client = await nats.connect(nats_url)
    try:
        js = client.jetstream(publish_async_max_pending=8192)
        acks = [
            await js.publish_async(subject, body, headers={"Nats-Msg-Id": event_id})
            for event_id, body in events
        ]
        results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), 120)
        return sum(isinstance(result, BaseException) for result in results)
    finally:
        await client.close()


async def _publish_paced(
    nats_url: str, subject: str, events: list[tuple[str, bytes]], rate: float
) -> tuple[dict[str, float], dict[str, float], int]:
    """Open loop: event n is published at start + n / rate (perf_counter schedule, never a
    sleep after each), whatever happened before. Returns id → wall-clock publish time,
    id → wall-clock scheduled time, and how many the stream refused."""
    import nats

    client = await nats.connect(nats_url)
    try:
        js = client.jetstream(publish_async_max_pending=8192)
        published: dict[str, float] = {}
        scheduled: dict[str, float] = {}
        acks = []
        clock = time.perf_counter  # uvloop's loop.time() is cached per iteration, in ms
        start = clock() + 0.05
        wall_start = time.time() + (start - clock())
        interval = 1.0 / rate
        for number, (event_id, body) in enumerate(events):
            at = start + number * interval
            for _ in range(3):  # again if the loop's millisecond timer woke it early
                if (delay := at - clock()) <= 0:
                    break
                await asyncio.sleep(delay)
            scheduled[event_id] = wall_start + number * interval
            published[event_id] = time.time()
            acks.append(await js.publish_async(subject, body, headers={"Nats-Msg-Id": event_id}))
        results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), 60)
        return published, scheduled, sum(isinstance(r, BaseException) for r in results)
    finally:
        await client.close()


async def _ensure_streams(nats_url: str, prefix: str) -> str:
    import nats

    from wabus.natsbus import ensure_streams

    settings = Settings(nats_url=nats_url, subject_prefix=prefix)
    client = await nats.connect(nats_url)
    try:
        await ensure_streams(client.jetstream(), settings)
    finally:
        await client.close()
    return settings.topology.events_stream


async def _stream_messages(nats_url: str, stream: str) -> int:
    import nats

    client = await nats.connect(nats_url)
    try:
        return int((await client.jetstream().stream_info(stream)).state.messages)
    finally:
        await client.close()


# the throwaway database


async def _create_database(server_url: str) -> tuple[str, str]:
    import asyncpg

    name = "wabus_bench_" + secrets.token_hex(4)
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    parts = urllib.parse.urlsplit(server_url)
    return name, urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def _drop_database(server_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _table_rows(database_url: str) -> dict[str, int]:
    """Rows per table the relay created (whatever its schema is): a sign the log was written."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetch(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        rows = {}
        for table in tables:
            name = f'"{table["schemaname"]}"."{table["tablename"]}"'
            rows[f"{table['schemaname']}.{table['tablename']}"] = int(
                await connection.fetchval(f"SELECT count(*) FROM {name}")  # noqa: S608
            )
        return rows
    finally:
        await connection.close()


# processes: /proc (Linux)


def _cpu_snapshot() -> dict[int, tuple[str, int]]:
    """pid → (command name, user + system clock ticks so far) of every process; the machine's
    busy ticks (all cores) under pid -1, its interrupt handling under -2."""
    snapshot: dict[int, tuple[str, int]] = {}
    for pid, stat in process_stats():
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat.rsplit(")", 1)[1].split()
        snapshot[pid] = (name, int(fields[11]) + int(fields[12]))
    machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    snapshot[-1] = ("machine", sum(machine) - machine[3] - machine[4])
    snapshot[-2] = ("interrupts", machine[5] + machine[6])  # (soft)irq: no process's time
    return snapshot


def _cores(
    before: dict[int, tuple[str, int]],
    after: dict[int, tuple[str, int]],
    seconds: float,
    labels: dict[int, str],
) -> dict[str, float]:
    """CPU cores used in between, by label (else command name), busiest first; `machine` is
    the whole machine, kernel included, so it shows what the named processes leave out."""
    ticks: dict[str, int] = {}
    for pid, (name, now) in after.items():
        label = labels.get(pid, name)
        ticks[label] = ticks.get(label, 0) + now - before.get(pid, (name, 0))[1]
    per_second = os.sysconf("SC_CLK_TCK") * max(seconds, 1e-9)
    cores = {label: round(t / per_second, 2) for label, t in ticks.items()}
    return dict(sorted(((k, v) for k, v in cores.items() if v >= 0.02), key=lambda kv: -kv[1]))


class _RssSampler(threading.Thread):
    """The relay's resident memory (its whole process tree), every 0.5 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), rss_mb(process_tree(self.pid))))
            if self.done.wait(0.5):
                return

    def peak(self, since: float = 0.0, until: float = float("inf")) -> float | None:
        values = [rss for at, rss in self.samples if since <= at <= until and rss > 0]
        return round(max(values), 1) if values else None


# the relay


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _wait_ready(url: str, relay: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.poll() is not None:
            raise RuntimeError(f"the relay exited at start (status {relay.returncode})")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the relay was not ready within 60 s")


def _stop(relay: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGINT (uvicorn's graceful stop, which lets the relay flush its log), then SIGKILL."""
    if relay.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            relay.send_signal(signal.SIGINT)
        try:
            relay.wait(grace)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()


def _await_deliveries(
    receiver: str, expected: set[str], timeout: float, relay: subprocess.Popen[bytes], what: str
) -> None:
    """Poll the receiver until every expected id arrived, the relay died, nothing arrived for
    a minute, or `timeout`."""
    started = time.monotonic()
    progress_at = last_print = started
    last_unique = -1
    while True:
        now = time.monotonic()
        stats = _get(receiver + "/stats")
        if stats["unique"] != last_unique:
            last_unique, progress_at = stats["unique"], now
        if stats["unique"] >= len(expected):
            break
        if relay.poll() is not None:
            _log(f"{what}: the relay exited (status {relay.returncode})")
            break
        if now - started > timeout or now - progress_at > min(60.0, timeout):
            _log(f"{what}: gave up waiting, {stats['unique']:,} of {len(expected):,} arrived")
            break
        if now - last_print >= 5:
            _log(f"{what}: {stats['unique']:,} of {len(expected):,} arrived")
            last_print = now
        time.sleep(0.1)


def _detailed_stats(receiver: str) -> dict[str, Any]:
    """Every arrival, after a short grace for late duplicates."""
    time.sleep(0.5)
    return _get(receiver + "/stats?detail=1")


def _checks(stats: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    arrived = set(stats["ids"])
    return {
        "delivered": len(arrived & expected),
        "missing": len(expected - arrived),
        "unexpected_ids": len(arrived - expected),
        "duplicates": stats["duplicates"],
        "duplicate_ids": stats["duplicate_ids"],
        "order_violations": stats["order_violations"],
        "signatures_verified": stats["signatures_verified"],
        "signature_failures": stats["signature_failures"],
        "unsigned": stats["unsigned"],
        "malformed": stats["malformed"],
        "receiver_connections_opened": stats["connections_opened"],
        "receiver_max_open_connections": stats["max_open_connections"],
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _rounded(value: float | None, digits: int = 0) -> float | int | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return round(value, digits) if digits else round(value)


# the run


@dataclass
class _Bench:
    """What the phases share."""

    options: argparse.Namespace
    scratch: Path
    cleanup: contextlib.ExitStack
    nats_url: str = ""
    nats_pids: list[int] = field(default_factory=list)
    prefix: str = ""
    subject: str = ""
    events_stream: str = ""
    secret: str = ""
    receiver: str = ""
    receiver_pid: int = 0
    database_url: str | None = None


def _start_nats(bench: _Bench) -> None:
    server = bench.cleanup.enter_context(EmbeddedNats(bench.scratch / "nats"))
    bench.nats_url = server.url
    bench.nats_pids = [
        pid
        for pid in process_tree(os.getpid())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server"
    ]
    bench.prefix = "bwh" + secrets.token_hex(4)
    bench.events_stream = _run(_ensure_streams(bench.nats_url, bench.prefix))
    bench.subject = f"{bench.prefix}.evt.{INSTANCE}.{EVENT_TYPE}"


def _start_database(bench: _Bench) -> None:
    server_url = bench.options.database_url
    if not server_url:
        return
    name, bench.database_url = _run(_create_database(server_url))
    bench.cleanup.callback(lambda: _run(_drop_database(server_url, name)))
    _log(f"delivery log in the throwaway database {name}")


def start_receiver(cleanup: contextlib.ExitStack, secret: str, name: str) -> tuple[str, int]:
    """The receiver in a process of its own (stopped by `cleanup`): its URL and pid, once it
    answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = multiprocessing.get_context("spawn").Process(
        target=_receiver_process, args=(port, secret), daemon=True, name=name
    )
    child.start()

    def stop() -> None:
        child.terminate()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()

    cleanup.callback(stop)
    for _ in range(300):
        with contextlib.suppress(OSError):
            _get(url + "/stats")
            return url, child.pid or 0
        time.sleep(0.05)
    raise TimeoutError("the receiver did not start")


def _start_receiver(bench: _Bench) -> None:
    bench.secret = new_secret()
    receiver = start_receiver(bench.cleanup, bench.secret, "bench-receiver")
    bench.receiver, bench.receiver_pid = receiver


def _bare_phase(bench: _Bench) -> dict[str, Any]:
    options = bench.options
    head, tail = _event(0, 0, "bare")[1].split(b"bare0#0")
    _log(f"bare POST loop: {options.concurrency} in flight for {options.duration:g} s")
    _post(bench.receiver + "/reset")
    arguments = (bench.receiver + "/hook", options.concurrency, options.duration, head, tail)
    with multiprocessing.get_context("spawn").Pool(1, initializer=_ignore_sigint) as pool:
        bare = pool.apply(_bare_loop, arguments)
    stats = _get(bench.receiver + "/stats")
    _post(bench.receiver + "/reset")
    return {
        "requests_per_second": _rounded(bare["requests"] / options.duration),
        "requests": bare["requests"],
        "errors": bare["errors"],
        "order_violations": stats["order_violations"],
        "receiver_cpu_us_per_request": _rounded(
            stats["cpu_seconds"] / max(1, stats["requests"]) * 1e6, 1
        ),
    }


def _start_relay(bench: _Bench) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`python -m relay` (one worker) on its own session, configured by the environment only;
    its URL and its log file."""
    options = bench.options
    port = free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WABUS_", "NATS_")) and key != "DATABASE_URL"
    } | {
        "NATS_URL": bench.nats_url,
        "WABUS_SUBJECT_PREFIX": bench.prefix,
        "WABUS_WEBHOOK_URL": bench.receiver + "/hook",
        "WABUS_WEBHOOK_SECRET": bench.secret,
        "WABUS_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
        "WABUS_API_KEYS": "bench:" + secrets.token_hex(16),
        "WABUS_RELAY_WORKERS": "1",
        "WABUS_HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    if bench.database_url:
        environment["DATABASE_URL"] = bench.database_url
    environment.update(item.split("=", 1) for item in options.relay_env)
    command = [sys.executable, "-m", "relay"]
    if options.profile:  # cProfile writes its file when SIGINT stops the relay
        command[1:1] = ["-m", "cProfile", "-o", str(options.profile.resolve())]
    relay_log = bench.scratch / "relay.log"
    with relay_log.open("wb") as log_file:
        relay = subprocess.Popen(  # noqa: S603 - this Python, `-m relay`
            command,
            env=environment,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the script, which stops the relay in order
        )
    bench.cleanup.callback(_stop, relay)
    return relay, f"http://127.0.0.1:{port}", relay_log


def _throughput_phase(
    bench: _Bench, report: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], Path, _RssSampler]:
    """Publish the backlog, then start the relay and time its delivery; the relay is left
    running for the latency phase."""
    options = bench.options
    _log(f"publishing {options.events:,} events over {options.chats:,} chats")
    backlog = [_event(n % options.chats, n // options.chats, "t") for n in range(options.events)]
    began = time.perf_counter()
    refused = _run(_publish_backlog(bench.nats_url, bench.subject, backlog))
    publish_seconds = time.perf_counter() - began
    stored = _run(_stream_messages(bench.nats_url, bench.events_stream))
    expected = {event_id for event_id, _ in backlog}
    del backlog

    relay, relay_url, relay_log = _start_relay(bench)
    launched_at = time.time()
    sampler = _RssSampler(relay.pid)
    sampler.start()
    bench.cleanup.callback(sampler.done.set)
    try:
        _wait_ready(relay_url, relay)
    except Exception:  # whatever stopped it: show its log, then let it through
        _log("relay log:\n" + _tail(relay_log))
        raise
    ready_at = time.time()
    relay_pids = process_tree(relay.pid)
    at_ready = _get(bench.receiver + "/stats")["unique"]
    cpu_before, clock_before = _cpu_snapshot(), time.monotonic()
    _log(f"relay ready in {ready_at - launched_at:.1f} s; delivering the backlog")
    _await_deliveries(bench.receiver, expected, options.timeout, relay, "throughput")
    seconds = time.monotonic() - clock_before
    labels = {pid: "relay" for pid in relay_pids} | {pid: "nats-server" for pid in bench.nats_pids}
    labels |= {bench.receiver_pid: "receiver", os.getpid(): "bench script"}
    cores = _cores(cpu_before, _cpu_snapshot(), seconds, labels)
    ended = time.monotonic()

    stats = _detailed_stats(bench.receiver)
    times: list[float] = stats["times"]
    count = len(times)
    sustained = middle = None
    if count > 1 and times[-1] > times[0]:
        sustained = (count - 1) / (times[-1] - times[0])
        low, high = int(0.1 * count), int(0.9 * count) - 1
        if high > low and times[high] > times[low]:
            middle = (high - low) / (times[high] - times[low])
    after_ready = max(1, count - at_ready)  # CPU is counted from readiness on
    report["throughput"] = {
        "published": options.events,
        "stream_refused": refused,
        "in_stream": stored,
        "publish_per_second": _rounded(options.events / publish_seconds),
        **_checks(stats, expected),
        "events_per_second": _rounded(sustained),
        "events_per_second_middle_80": _rounded(middle),
        "first_to_last_s": _rounded(times[-1] - times[0], 3) if count > 1 else None,
        "relay_start_to_ready_s": _rounded(ready_at - launched_at, 3),
        "relay_start_to_first_webhook_s": _rounded(times[0] - launched_at, 3) if times else None,
        "cpu_us_per_event": {
            name: _rounded(cores.get(name, 0.0) * seconds / after_ready * 1e6)
            for name in ("relay", "nats-server", "receiver")
        },
        "cpu_cores_used": cores,  # by process, from the relay's readiness to the last arrival
        "relay_rss_max_mb": sampler.peak(until=ended),
    }
    bare_rate = report["bare_post_loop"]["requests_per_second"]
    report["ratio_to_bare_loop"] = (
        _rounded(sustained / bare_rate, 2) if sustained and bare_rate else None
    )
    return relay, relay_log, sampler


def _latency_phase(
    bench: _Bench, relay: subprocess.Popen[bytes], sampler: _RssSampler
) -> dict[str, Any]:
    """Open loop at `--rate` on the relay that drained the backlog."""
    options = bench.options
    latency: dict[str, Any] = {"rate": options.rate}
    total = int(options.rate * options.rate_duration)
    if total <= 0 or relay.poll() is not None:
        return latency
    _post(bench.receiver + "/reset")
    paced = [_event(n % options.chats, n // options.chats, "l") for n in range(total)]
    _log(f"latency: {total:,} events at {options.rate:g}/s")
    started = time.monotonic()
    published, scheduled, refused = _run(
        _publish_paced(bench.nats_url, bench.subject, paced, options.rate)
    )
    wanted = set(published)
    _await_deliveries(bench.receiver, wanted, max(60.0, options.timeout / 5), relay, "latency")
    stats = _detailed_stats(bench.receiver)
    arrival = dict(zip(stats["ids"], stats["times"], strict=True))
    from_publish = sorted((arrival[i] - published[i]) * 1000 for i in wanted if i in arrival)
    from_schedule = sorted((arrival[i] - scheduled[i]) * 1000 for i in wanted if i in arrival)
    latency |= {
        "published": total,
        "stream_refused": refused,
        **_checks(stats, wanted),
        "publisher_lag_max_ms": _rounded(max(published[i] - scheduled[i] for i in wanted) * 1e3, 2),
    }
    if from_publish:
        latency |= {
            f"{name}_ms": _rounded(_percentile(from_publish, share), 2)
            for name, share in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }
        latency["max_ms"] = _rounded(from_publish[-1], 2)
        latency["p99_from_schedule_ms"] = _rounded(_percentile(from_schedule, 0.99), 2)
    latency["relay_rss_max_mb"] = sampler.peak(since=started)
    return latency


def _measure(options: argparse.Namespace, scratch: Path, cleanup: contextlib.ExitStack) -> Any:
    report: dict[str, Any] = {
        "config": {
            "events": options.events,
            "chats": options.chats,
            "concurrency": options.concurrency,
            "duration_s": options.duration,
            "rate": options.rate,
            "rate_duration_s": options.rate_duration,
            "relay_workers": 1,
            "cpus": os.cpu_count(),
            "delivery_log": bool(options.database_url),
            "profiled": bool(options.profile),
        }
    }
    bench = _Bench(options, scratch, cleanup)
    _start_nats(bench)
    _start_database(bench)
    _start_receiver(bench)
    report["bare_post_loop"] = _bare_phase(bench)
    relay, relay_log, sampler = _throughput_phase(bench, report)
    report["latency"] = _latency_phase(bench, relay, sampler)
    report["relay_rss_max_mb"] = sampler.peak()

    _stop(relay)  # before counting the log: the relay flushes it on the way out
    report["relay_exit_status"] = relay.returncode
    if bench.database_url:
        report["delivery_log_tables"] = _run(_table_rows(bench.database_url))
    logged = _tail(relay_log, 100_000).splitlines()  # LOG_LEVEL=WARNING: warnings and worse
    report["relay_log_lines"] = len(logged)
    if logged:
        report["relay_log_tail"] = logged[-5:]
    return report


def _verdicts(report: dict[str, Any]) -> dict[str, Any]:
    throughput, latency = report["throughput"], report.get("latency", {})
    values = {
        "events_per_second": throughput.get("events_per_second"),
        "ratio_to_bare_loop": report.get("ratio_to_bare_loop"),
        "p99_ms": latency.get("p99_ms"),
        "relay_rss_mb": report.get("relay_rss_max_mb"),
    }
    checks = {  # at least / at most / below the target
        "events_per_second": lambda value, target: value >= target,
        "ratio_to_bare_loop": lambda value, target: value >= target,
        "p99_ms": lambda value, target: value <= target,
        "relay_rss_mb": lambda value, target: value < target,
    }
    verdicts: dict[str, Any] = {}
    for name, target in TARGETS.items():
        value = values[name]
        met = None if value is None else checks[name](value, target)
        verdicts[name] = {"target": target, "value": value, "met": met}
    if report["config"]["rate"] != 1000:
        verdicts["p99_ms"]["note"] = "the target is for 1,000 events/s"
    return verdicts


def _summary(report: dict[str, Any]) -> str:
    bare, throughput, latency = report["bare_post_loop"], report["throughput"], report["latency"]
    config = report["config"]
    cpu = throughput["cpu_us_per_event"]
    lines = [
        f"webhook delivery, one relay process, {config['cpus']} CPUs, delivery log "
        + ("on (Postgres)" if config["delivery_log"] else "off"),
        f"  bare POST loop     {bare['requests_per_second']} requests/s "
        f"({config['concurrency']} in flight, {bare['errors']} errors; receiver "
        f"{bare['receiver_cpu_us_per_request']} µs CPU/request)",
        f"  throughput         {throughput['events_per_second']} events/s first→last, "
        f"{throughput['events_per_second_middle_80']} over the middle 80 % "
        f"({throughput['delivered']:,} of {throughput['published']:,} in "
        f"{throughput['first_to_last_s']} s; ratio to bare loop {report['ratio_to_bare_loop']})",
        f"                     relay ready {throughput['relay_start_to_ready_s']} s after start, "
        f"first webhook {throughput['relay_start_to_first_webhook_s']} s; "
        f"published at {throughput['publish_per_second']}/s",
        f"  CPU per event      relay {cpu['relay']} µs, nats-server {cpu['nats-server']} µs, "
        f"receiver {cpu['receiver']} µs",
        "  cores used         "
        + ", ".join(f"{name} {used}" for name, used in throughput["cpu_cores_used"].items()),
        f"  correctness        missing {throughput['missing']}, duplicates "
        f"{throughput['duplicates']}, order violations {throughput['order_violations']}, "
        f"signature failures {throughput['signature_failures']} of "
        f"{throughput['signatures_verified']} verified, unsigned {throughput['unsigned']}",
    ]
    if "published" in latency:
        lines += [
            f"  latency at {config['rate']:g}/s  p50 {latency.get('p50_ms')} ms, p90 "
            f"{latency.get('p90_ms')}, p99 {latency.get('p99_ms')}, max {latency.get('max_ms')} "
            f"(p99 from schedule {latency.get('p99_from_schedule_ms')}; "
            f"{latency['delivered']:,} of {latency['published']:,} arrived, "
            f"duplicates {latency['duplicates']}, order violations "
            f"{latency['order_violations']}, signature failures {latency['signature_failures']})",
        ]
    lines.append(
        f"  relay RSS max      {report['relay_rss_max_mb']} MB "
        f"(throughput {throughput['relay_rss_max_mb']}, latency {latency.get('relay_rss_max_mb')})"
    )
    if "delivery_log_tables" in report:
        lines.append(f"  delivery log rows  {report['delivery_log_tables']}")
    if report.get("relay_log_lines"):
        lines.append(f"  relay log          {report['relay_log_lines']} lines (warnings+), last:")
        lines += [f"    {line[:200]}" for line in report["relay_log_tail"]]
    lines.append("  targets:")
    for name, verdict in report["targets"].items():
        mark = {True: "met", False: "NOT met", None: "n/a"}[verdict["met"]]
        lines.append(f"    {name:20} {verdict['value']} (target {verdict['target']:g}): {mark}")
    return "\n".join(lines)


def _interrupted(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog size")
    parser.add_argument("--chats", type=int, default=1000, help="chats the events spread over")
    parser.add_argument("--concurrency", type=int, default=64, help="bare loop, in flight")
    parser.add_argument("--duration", type=float, default=10.0, help="bare loop, seconds")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase, events/s")
    parser.add_argument("--rate-duration", type=float, default=15.0, help="latency phase, s")
    parser.add_argument("--timeout", type=float, default=300.0, help="for the backlog, s")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="Postgres server for the delivery log (default: DATABASE_URL)",
    )
    parser.add_argument("--profile", type=Path, help="cProfile the relay into this file")
    parser.add_argument(
        "--relay-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more setting for the relay (repeatable), e.g. WABUS_WEBHOOK_CONCURRENCY=64",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (the summary goes to stderr)"
    )
    options = parser.parse_args()
    if options.events < 1 or options.chats < 1 or options.rate <= 0:
        parser.error("--events, --chats and --rate must be positive")

    configure_logging("WARNING", LogFormat.CONSOLE)  # wabus helpers log to stderr, quietly
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        with contextlib.ExitStack() as cleanup:
            scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
            report = _measure(options, scratch, cleanup)
    except KeyboardInterrupt:
        _log("interrupted; everything started was stopped")
        sys.exit(130)
    report["targets"] = _verdicts(report)
    missing = report["throughput"]["missing"] + report["latency"].get("missing", 0)
    report["ok"] = missing == 0
    # with --json the summary goes to stderr, so stdout is the one JSON object
    print(_summary(report), file=sys.stderr if options.json else sys.stdout, flush=True)
    if options.json:
        print(json.dumps(report, allow_nan=False), flush=True)
    sys.exit(0 if missing == 0 else 1)


if __name__ == "__main__":
    main()
