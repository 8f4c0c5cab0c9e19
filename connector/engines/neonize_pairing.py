"""Pairing in a process of its own: a device that is not linked yet pairs in a child process,
which wabus kills when the pairing is abandoned.

Why a process: for an unpaired device, neonize's Go `Neonize()` call (0.5.2) loops over
whatsmeow's QR channel and then waits for a device id (`FetchMe` polls `Store.ID`, checking
nothing else). Nothing neonize exports ends that wait, and a `Stop` before it makes `FetchMe`
dereference the deleted client (a crash); a `Stop` during the QR phase ends whatsmeow's QR emitter
without closing the channel the loop reads. A pairing abandoned in the QR phase would therefore
keep its thread until the process exits. A killed child releases everything.

Protocol, JSON lines. The parent writes the store location first (`{"name", "uuid",
"new_device"}`; never on the command line, where a Postgres password would show), then commands
(`{"kind": "pair_phone", "phone"}`). The child writes what happens:

    {"kind": "qr", "code"}                  a QR code, again on every refresh
    {"kind": "login_status", "status"}      whatsmeow's QR-channel result (`success`, `timeout`, …)
    {"kind": "event", "code", "data"}       a connection event: neonize's event code, protobuf
    {"kind": "pair_code", "code"}           the answer to `pair_phone` (or `pair_error`, "error")
    {"kind": "paired", "jid"}               linked and logged in once; the child then exits
    {"kind": "ended", "error"}              neonize's connect ended (error text, or null)

The child exits when its standard input closes (the parent is gone).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connector.engines.neonize_lib import (
    EVENT_TO_INT,
    INT_TO_EVENT,
    ClientName,
    ClientType,
    DecodeError,
    NeonizeClient,
    NeonizeError,
    aio_events,
    nz,
    quiet_library_logs,
)
from connector.engines.neonize_mapping import device_jid_str
from connector.engines.neonize_store import StoreLocation
from wabus.logs import get_logger

log = get_logger(__name__)

PAIRING_COMMAND: tuple[str, ...] = (sys.executable, "-m", "connector.engines.neonize_pairing")
"""How the parent starts a pairing child; tests pass a child that plays WhatsApp instead."""

LOGIN_WAIT = 30.0
"""Seconds the child waits, after a successful scan, for its first login (whatsmeow reconnects
once after pairing) before it reports the device anyway: the device is stored either way."""

EXIT_WAIT = 10.0
"""Seconds the parent gives a paired child to stop its client and exit before killing it."""

FORWARDED_EVENTS = (
    nz.Disconnected,
    nz.LoggedOut,
    nz.StreamReplaced,
    nz.TemporaryBan,
    nz.ConnectFailure,
    nz.ClientOutdated,
    nz.StreamError,
    nz.PairStatus,
    nz.KeepAliveTimeout,
)
"""Connection events a pairing child passes on; `Connected` it keeps (it means paired)."""


# -- what a run of neonize reports, in the parent and through the pipe -----------------------


@dataclass(frozen=True)
class Qr:
    code: str


@dataclass(frozen=True)
class LoginStatus:
    status: str


@dataclass(frozen=True)
class Paired:
    jid: str


@dataclass(frozen=True)
class RunEnded:
    error: str | None


@dataclass(frozen=True)
class PairCode:
    code: str


@dataclass(frozen=True)
class PairFailed:
    error: str


News = Qr | LoginStatus | Paired | RunEnded | PairCode | PairFailed


def event_line(event: Any) -> dict[str, Any]:
    """A neonize protobuf event as a protocol line."""
    data = base64.b64encode(event.SerializeToString()).decode()
    return {"kind": "event", "code": EVENT_TO_INT[type(event)], "data": data}


def parse_line(line: bytes) -> News | Any:
    """A protocol line as news, or as the neonize protobuf event it carries. Raises ValueError
    for a line that is not part of the protocol."""
    try:
        message = json.loads(line)
        kind = message["kind"]
        match kind:
            case "qr":
                return Qr(str(message["code"]))
            case "login_status":
                return LoginStatus(str(message["status"]))
            case "paired":
                return Paired(str(message["jid"]))
            case "ended":
                error = message["error"]
                return RunEnded(None if error is None else str(error))
            case "pair_code":
                return PairCode(str(message["code"]))
            case "pair_error":
                return PairFailed(str(message["error"]))
            case "event":
                return INT_TO_EVENT[int(message["code"])].FromString(
                    base64.b64decode(message["data"])
                )
    except (KeyError, TypeError, ValueError, DecodeError) as error:  # ValueError: bad JSON, base64
        raise ValueError(f"not a pairing protocol line: {line[:200]!r}") from error
    raise ValueError(f"unknown pairing protocol message {kind!r}")


# -- the child --------------------------------------------------------------------------------


class PairingHost:
    """The child's side: one neonize client pairing a new device; everything it reports is
    written as protocol lines through `write`."""

    def __init__(self, client: Any, write: Callable[[dict[str, Any]], None]) -> None:
        self._client = client
        self._write = write
        self._scanned = asyncio.Event()
        self._logged_in = asyncio.Event()
        loop = asyncio.get_running_loop()

        def login_status(status: str) -> None:  # on a Go thread
            loop.call_soon_threadsafe(self._login_status, status)

        client.login_status = login_status
        client.qr(self._on_qr)
        for event_type in FORWARDED_EVENTS:
            client.event(event_type)(self._on_event)
        client.event(nz.Connected)(self._on_connected)

    async def _on_qr(self, client: Any, data: bytes) -> None:
        self._write({"kind": "qr", "code": data.decode()})

    def _login_status(self, status: str) -> None:
        self._write({"kind": "login_status", "status": status})
        if status == "success":
            self._scanned.set()

    async def _on_event(self, client: Any, event: Any) -> None:
        self._write(event_line(event))

    async def _on_connected(self, client: Any, event: Any) -> None:
        self._logged_in.set()

    async def pair_phone(self, phone: str) -> None:
        try:
            code = await self._client.PairPhone(
                phone, True, client_name=ClientName.LINUX, client_type=ClientType.CHROME
            )
        except NeonizeError as error:
            self._write({"kind": "pair_error", "error": str(error)})
            return
        self._write({"kind": "pair_code", "code": str(code)})

    async def run(self, commands: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Connect, and serve commands until the device is paired, neonize's connect ends, or
        the parent goes away (a `None` command)."""
        task: asyncio.Task[None] = await self._client.connect()
        scanned = asyncio.ensure_future(self._scanned.wait())
        command = asyncio.ensure_future(commands.get())
        helpers: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.wait({task, scanned, command}, return_when=asyncio.FIRST_COMPLETED)
                if command.done():
                    request = command.result()
                    if request is None:
                        return
                    if request.get("kind") == "pair_phone":
                        helper = asyncio.create_task(self.pair_phone(str(request["phone"])))
                        helpers.add(helper)
                        helper.add_done_callback(helpers.discard)
                    command = asyncio.ensure_future(commands.get())
                if scanned.done():
                    await self._report_paired(task)
                    return
                if task.done():
                    self._write({"kind": "ended", "error": _task_error(task)})
                    return
        finally:
            scanned.cancel()
            command.cancel()

    async def _report_paired(self, task: asyncio.Task[None]) -> None:
        """After a successful scan: wait for the first login (or the end of the connect), then
        report the device whatsmeow stored, and stop the client once that is safe."""
        logged_in = asyncio.ensure_future(self._logged_in.wait())
        try:
            await asyncio.wait(
                {task, logged_in}, timeout=LOGIN_WAIT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            logged_in.cancel()
        me = self._client.me
        if me is None or not me.JID.User:
            self._write({"kind": "ended", "error": "paired, but neonize reported no device"})
            return
        self._write({"kind": "paired", "jid": device_jid_str(me.JID)})
        if self._client.stoppable:
            await self._client.stop()


def _task_error(task: asyncio.Task[None]) -> str | None:
    if task.cancelled():
        return "connect cancelled"
    error = task.exception()
    return None if error is None else (str(error) or type(error).__name__)


ClientFactory = Callable[[str, str], Any]


def main(client_factory: ClientFactory = NeonizeClient) -> None:
    """Run a pairing child on this process's standard input and output. Never returns: the
    process exits with `os._exit`, since a neonize call stuck in Go would keep a normal exit
    waiting for its thread forever."""
    protocol = os.dup(1)
    os.dup2(2, 1)  # neonize and Go print to standard output; the protocol keeps it to itself
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    status = 1
    try:
        asyncio.run(_serve(client_factory, protocol))
        status = 0
    except BaseException as error:  # reported to the parent; the process ends either way
        _write_line(protocol, {"kind": "ended", "error": f"pairing process failed: {error!r}"})
    finally:
        os._exit(status)


async def _serve(client_factory: ClientFactory, protocol: int) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    config = json.loads(await stdin.readline())
    quiet_library_logs()
    aio_events.event_global_loop = loop
    client = client_factory(str(config["name"]), str(config["uuid"]))
    client.new_device = bool(config["new_device"])
    host = PairingHost(client, lambda message: _write_line(protocol, message))
    commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def read_commands() -> None:
        while line := await stdin.readline():
            commands.put_nowait(json.loads(line))
        commands.put_nowait(None)  # the parent closed our input: it is gone, or done with us

    reader = asyncio.create_task(read_commands())
    try:
        await host.run(commands)
    finally:
        reader.cancel()
    os._exit(0)  # before asyncio.run's shutdown would wait for neonize's Go thread


def _write_line(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


# -- the parent -------------------------------------------------------------------------------


class PairingError(Exception):
    """The pairing child refused or could not answer a request."""


class PairingProcess:
    """The parent's side of one pairing child: its lines become news for the session
    (`deliver`), requests get their answers, and `stop` kills it, which is what frees an
    abandoned pairing."""

    def __init__(
        self,
        location: StoreLocation,
        uuid: str,
        deliver: Callable[[Any], None],
        *,
        command: Sequence[str] = PAIRING_COMMAND,
        instance: str = "",
    ) -> None:
        self.location = location
        self._uuid = uuid
        self._deliver = deliver
        self._command = tuple(command)
        self._log = log.bind(instance=instance) if instance else log
        self._process: asyncio.subprocess.Process | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._answer: asyncio.Future[str | PairingError] | None = None
        self._paired = False
        self.ended: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    @property
    def running(self) -> bool:
        return self._process is not None and not self.ended.done()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def released(self) -> bool:
        """The child has exited and its output is read to the end."""
        exited = self._process is None or self._process.returncode is not None
        return exited and not self._readers

    async def start(self) -> None:
        """Start the child and hand it the store location. Raises OSError when it cannot run."""
        self._process = process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        config = {
            "name": self.location.name,
            "uuid": self._uuid,
            "new_device": self.location.new_device,
        }
        process.stdin.write(json.dumps(config).encode() + b"\n")
        for reader in (self._read_news(process, process.stdout), self._read_output(process.stderr)):
            task = asyncio.create_task(reader)
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)

    async def pair_phone(self, phone: str, within: float) -> str:
        """Ask the child for a phone pairing code."""
        process = self._process
        if process is None or process.stdin is None or not self.running:
            raise PairingError("the pairing process has ended")
        if self._answer is not None and not self._answer.done():
            raise PairingError("a pairing code is already being asked for")
        self._answer = asyncio.get_running_loop().create_future()
        process.stdin.write(json.dumps({"kind": "pair_phone", "phone": phone}).encode() + b"\n")
        try:
            answer = await asyncio.wait_for(asyncio.shield(self._answer), within)
        except TimeoutError as error:
            raise PairingError("the pairing process did not answer in time") from error
        if isinstance(answer, PairingError):
            raise answer
        return answer

    async def stop(self, *, exit_within: float = 0.0) -> None:
        """Let the child exit by itself for up to `exit_within` seconds, then kill it; wait
        until it is gone and its output is read."""
        process = self._process
        if process is None:
            self._settle(None)
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        if process.returncode is None and exit_within > 0:
            await asyncio.wait({asyncio.ensure_future(process.wait())}, timeout=exit_within)
        if process.returncode is None:
            process.kill()
        await process.wait()
        if self._readers:
            await asyncio.wait(set(self._readers))
        self._settle(None)

    async def _read_news(
        self, process: asyncio.subprocess.Process, stdout: asyncio.StreamReader
    ) -> None:
        while line := await stdout.readline():
            try:
                news = parse_line(line)
            except ValueError:
                self._log.warning("pairing process wrote an unknown line", line=line[:200])
                continue
            self._take(news)
        await process.wait()
        self._settle(
            None if self._paired else f"pairing process exited with code {process.returncode}"
        )

    def _take(self, news: Any) -> None:
        if isinstance(news, PairCode | PairFailed):
            answer = self._answer
            if answer is not None and not answer.done():
                answer.set_result(
                    news.code if isinstance(news, PairCode) else PairingError(news.error)
                )
            return
        if self._paired or self.ended.done():
            return  # after the device is reported, or the run ended, nothing is news
        if isinstance(news, RunEnded):
            self._settle(news.error or "neonize stopped before pairing")
            return
        if isinstance(news, Paired):
            self._paired = True
        self._deliver(news)

    async def _read_output(self, stderr: asyncio.StreamReader) -> None:
        """The child's own output (neonize's and Go's prints, Python warnings), one log line
        each, so none of it is lost and none of it is mistaken for protocol."""
        while line := await stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._log.info("pairing process output", line=text)

    def _settle(self, error: str | None) -> None:
        if not self.ended.done():
            self.ended.set_result(error)
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(PairingError("the pairing process has ended"))


if __name__ == "__main__":
    main()
