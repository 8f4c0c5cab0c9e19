"""The `neonize` engine: real WhatsApp sessions through neonize (Python over whatsmeow).

The adapter reports and decides nothing: what happens to a session reaches the connector's
listener, and the connector's supervisor chooses when to connect again. What it has to work
around in neonize (0.5.2):

- Event handlers run as independent coroutines whose exceptions neonize swallows, in no
  guaranteed order. Each handler here only enqueues (synchronously, so the queue keeps
  whatsmeow's order); one worker per session maps, downloads media, reports, and logs anything
  that fails.
- `connect()` returns a task that runs for the whole session; a failed connect surfaces only as
  that task's error and is never retried by neonize. `connect` waits until the attempt shows
  progress (a QR code, or connected) or fails, raising `ConnectError`; a later end of the task
  is reported through `on_close`.
- Once logged in, whatsmeow reconnects by itself after a dropped connection (reported as
  `on_close(NETWORK)`); `connect` on a session whose task still runs therefore starts nothing.
  Every other close stops the Go client, so the next `connect` starts afresh.
- The result of whatsmeow's QR channel (`timeout` when nobody scanned) only reaches a private
  callback of the client; a small subclass forwards it.
- neonize dispatches events to the first event loop it ever saw; `connect` points it at the
  running one.
- Go's `Stop` on a client still in the QR phase crashes the process later, and neonize calls it
  when a client is garbage-collected. Each connect attempt gets its own client (and Go uuid);
  `Stop` is called only once it is safe, and an abandoned attempt is stopped when it becomes so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.engine import Account, ConnectError, SendError, SentMessage, SessionListener
from connector.engines import neonize_outbound as outbound
from connector.engines.neonize_lib import (
    ClientName,
    ClientType,
    NeonizeError,
    NewAClient,
    ReceiptType,
    aio_events,
    nz,
    quiet_library_logs,
)
from connector.engines.neonize_mapping import (
    close_reason,
    connect_error_reason,
    device_jid_str,
    downloadable,
    from_unix,
    inbound,
    jid_str,
    login_status_reason,
    parse_device_jid,
    qr_expires_at,
)
from connector.engines.neonize_store import (
    NeonizeStore,
    PostgresStore,
    SqliteStore,
    StoreLocation,
)
from connector.reasons import DisconnectReason
from schemas.commands import (
    MarkRead,
    Presence,
    SendLocation,
    SendMessage,
    SendReaction,
    SendText,
)
from schemas.envelope import utc_now
from wabus.logs import get_logger
from wabus.settings import Settings
from wabus.ssrf import Network

log = get_logger(__name__)

MAX_INBOUND_MEDIA_BYTES = 100 * 1024 * 1024
"""Inbound media above this is announced (kind, mimetype, size, sha256) but not downloaded."""

REAP_WITHIN = 600.0
"""How long a run being wound down may take to reach a point where it can be stopped."""

SUBSCRIBED_EVENTS = (
    nz.Message,
    nz.Receipt,
    nz.ChatPresence,
    nz.Connected,
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


class NeonizeClient(NewAClient):  # type: ignore[misc]
    """neonize's client, with whatsmeow's QR-channel result (`success`, `timeout`, `err-…`)
    forwarded instead of dropped (the callback runs on a Go thread), and without neonize's
    stop-on-garbage-collection: stopping a client whose Go side is still in the QR phase
    crashes the process later, so the session alone decides when to stop."""

    login_status: Callable[[str], None] | None = None

    def __init__(self, name: str, uuid: str) -> None:
        super().__init__(name, uuid=uuid)
        self._stop_finalizer.detach()

    def _NewAClient__onLoginStatus(self, uuid: int, status: int) -> None:
        callback = self.login_status
        if callback is not None and status:
            callback(ctypes.string_at(status).decode(errors="replace"))

    @property
    def stoppable(self) -> bool:
        """Whether Go's `Stop` is safe: neonize's connect never started, has returned, or reached
        its event loop (it then has sent the device, `me`). Before that, a stopped client makes
        the Go side dereference a deleted client once the QR phase ends."""
        task = self.connect_task
        return task is None or task.done() or self.me is not None


ClientFactory = Callable[[str, str], Any]
"""(store location, uuid) -> a `NeonizeClient`; tests pass one whose network side is faked."""


@dataclass(frozen=True)
class _Qr:
    code: str


@dataclass(frozen=True)
class _LoginStatus:
    status: str


@dataclass(frozen=True)
class _TaskEnded:
    error: str | None


@dataclass
class _Connection:
    """One run of neonize's connect: its own Go client (a uuid per run), so that a run being
    wound down never mixes with the next one."""

    generation: int
    client: Any
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class NeonizeSession:
    """One linked device of one instance."""

    def __init__(
        self,
        instance: str,
        listener: SessionListener,
        store: NeonizeStore,
        *,
        media_allow: Sequence[Network] = (),
        connect_timeout: float = 20.0,
        pair_timeout: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
        client_factory: ClientFactory = NeonizeClient,
    ) -> None:
        self.instance = instance
        self._client_factory = client_factory
        self._listener = listener
        self._store = store
        self._media_allow = tuple(media_allow)
        self._connect_timeout = connect_timeout
        self._pair_timeout = pair_timeout
        self._clock = clock
        self._connection: _Connection | None = None
        self._generation = 0
        self._connecting = False
        self._logged_in = False
        self._qr_count = 0
        self._progress = asyncio.Event()
        self._qr_shown = asyncio.Event()
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._reapers: set[asyncio.Task[None]] = set()
        self._remembered: str | None = None
        self._connect_lock = asyncio.Lock()
        self._log = log.bind(instance=instance)

    @property
    def running(self) -> bool:
        """Whether a neonize connection (or whatsmeow's own reconnecting) is under way."""
        return self._connection is not None and self._connection.running

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    async def connect(self) -> None:
        async with self._connect_lock:  # one attempt at a time (pair_phone connects too)
            if not self.running:
                await self._connect()

    async def _connect(self) -> None:
        await self._stop_client()
        try:
            location = await self._store.location(self.instance)
        except Exception as error:
            self._log.warning("neonize store unavailable", error=str(error))
            raise ConnectError(DisconnectReason.UNKNOWN, f"store unavailable: {error}") from error
        self._start_worker()
        quiet_library_logs()
        aio_events.event_global_loop = asyncio.get_running_loop()
        self._generation += 1
        connection = self._connection = _Connection(
            self._generation, self._new_client(location, self._generation)
        )
        self._qr_count = 0
        self._progress.clear()
        self._qr_shown.clear()
        self._connecting = True
        try:
            try:
                task = connection.task = await connection.client.connect()
            except NeonizeError as error:
                raise ConnectError(connect_error_reason(str(error)), str(error)) from error
            task.add_done_callback(lambda done: self._task_done(connection.generation, done))
            progress = asyncio.ensure_future(self._progress.wait())
            try:
                await asyncio.wait(
                    {task, progress},
                    timeout=self._connect_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                progress.cancel()
        finally:
            self._connecting = False
        if task.done():
            detail = _task_error(task) or "neonize stopped before connecting"
            reason = connect_error_reason(detail)
            self._log.warning("neonize connect failed", reason=reason.value, detail=detail)
            await self._stop_client()
            raise ConnectError(reason, detail)

    async def disconnect(self) -> None:
        await self._stop_client()
        await self._report_close(DisconnectReason.STOPPED, "disconnected by wabus")
        await self._stop_worker()

    async def send(self, message: SendMessage) -> SentMessage:
        client = self._logged_in_client()
        if isinstance(message, SendText):
            built = outbound.build_text(message)
        elif isinstance(message, SendLocation):
            built = outbound.build_location(message)
        elif isinstance(message, SendReaction):
            built = outbound.build_reaction(message, now_ms=int(time.time() * 1000))
        else:
            data, mimetype = await outbound.load_media(message, self._media_allow)
            try:
                upload = await client.upload(data, outbound.media_type(message))
            except NeonizeError as error:
                raise SendError("upload_failed", str(error), retryable=True) from error
            built = outbound.build_media(message, upload, mimetype)
        try:
            response = await client.send_message(outbound.to_jid(message.to), built)
        except NeonizeError as error:
            raise _send_error(error) from error
        return SentMessage(
            message_id=str(response.ID),
            chat=outbound.jid_string(message.to),
            timestamp=from_unix(int(response.Timestamp)) if response.Timestamp else self._clock(),
        )

    async def pair_phone(self, phone: str) -> str:
        if self._logged_in:
            raise SendError("already_paired", "this instance is already linked to WhatsApp")
        if not self.running:
            try:
                await self.connect()
            except ConnectError as error:
                raise SendError("not_connected", error.detail, retryable=True) from error
        try:
            # whatsmeow pairs by phone over the socket that waits for a QR scan.
            await asyncio.wait_for(self._qr_shown.wait(), self._pair_timeout)
        except TimeoutError as error:
            raise SendError(
                "not_connected", "WhatsApp did not offer pairing in time", retryable=True
            ) from error
        assert self._connection is not None
        try:
            code = str(
                await self._connection.client.PairPhone(
                    phone, True, client_name=ClientName.LINUX, client_type=ClientType.CHROME
                )
            )
        except NeonizeError as error:
            raise SendError("pair_phone_failed", str(error), retryable=True) from error
        self._log.info("pairing code issued")
        await self._guarded(self._listener.on_pair_code(code, phone), "on_pair_code")
        return code

    async def logout(self) -> None:
        if self._logged_in:
            try:
                await self._logged_in_client().logout()
            except NeonizeError as error:
                raise SendError("logout_failed", str(error), retryable=True) from error
        elif not self.running:
            raise SendError(
                "not_connected", "logging out needs a connected session", retryable=True
            )
        await self._stop_client()
        await self._forget_device()
        await self._report_close(DisconnectReason.LOGGED_OUT, "logged out on request")

    async def mark_read(self, request: MarkRead) -> None:
        if request.sender is None and request.chat.endswith("@g.us"):
            raise SendError("sender_required", "marking group messages read needs their sender")
        client = self._logged_in_client()
        try:
            await client.mark_read(
                *request.message_ids,
                chat=outbound.to_jid(request.chat),
                sender=outbound.to_jid(request.sender or request.chat),
                receipt=ReceiptType.READ,
            )
        except NeonizeError as error:
            raise SendError("read_failed", str(error), retryable=True) from error

    async def set_presence(self, request: Presence) -> None:
        client = self._logged_in_client()
        state, media = outbound.chat_presence(request)
        try:
            await client.send_chat_presence(outbound.to_jid(request.chat), state, media)
        except NeonizeError as error:
            raise SendError("presence_failed", str(error), retryable=True) from error

    async def close(self) -> None:
        """Release the Go client and the worker without reporting (engine shutdown)."""
        await self._stop_client()
        await self._stop_worker()
        for reaper in list(self._reapers):
            reaper.cancel()
        await asyncio.gather(*self._reapers, return_exceptions=True)

    # -- neonize clients and their callbacks -----------------------------------------------

    def _new_client(self, location: StoreLocation, generation: int) -> Any:
        client = self._client_factory(location.name, f"wabus-{self.instance}-{generation}")
        # Set after construction: neonize's `jid=` argument would also replace the uuid.
        client.new_device = location.new_device
        if location.jid is not None:
            client.jid = parse_device_jid(location.jid)
        loop = asyncio.get_running_loop()

        def login_status(status: str) -> None:  # on a Go thread: nothing may escape
            try:
                loop.call_soon_threadsafe(
                    self._queue.put_nowait, (generation, _LoginStatus(status))
                )
            except Exception:
                self._log.exception("neonize login status callback failed", status=status)

        client.login_status = login_status
        client.qr(functools.partial(self._on_qr, generation))
        for event_type in SUBSCRIBED_EVENTS:
            client.event(event_type)(functools.partial(self._on_event, generation))
        return client

    async def _on_qr(self, generation: int, client: Any, data: bytes) -> None:
        try:
            self._queue.put_nowait((generation, _Qr(data.decode())))
        except Exception:
            self._log.exception("neonize QR callback failed")

    async def _on_event(self, generation: int, client: Any, event: Any) -> None:
        try:
            self._queue.put_nowait((generation, event))
        except Exception:
            self._log.exception("neonize event callback failed")

    def _task_done(self, generation: int, task: asyncio.Task[None]) -> None:
        if self._connecting or generation != self._generation or task.cancelled():
            return  # connect() reports what happened while it waited; stale runs are reaped
        self._queue.put_nowait((generation, _TaskEnded(_task_error(task))))

    def _logged_in_client(self) -> Any:
        if self._connection is None or not self._logged_in:
            raise SendError("not_connected", "the session is not connected", retryable=True)
        return self._connection.client

    async def _stop_client(self) -> None:
        """End the current run of neonize's connect; its later events and end are no news."""
        connection, self._connection = self._connection, None
        self._generation += 1
        self._logged_in = False
        if connection is None:
            return
        if connection.client.stoppable:
            await self._stop_go_client(connection)
            return
        reaper = asyncio.create_task(self._reap(connection))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _stop_go_client(self, connection: _Connection) -> None:
        try:
            await connection.client.stop()
        except Exception:
            self._log.exception("stopping the neonize client failed")
        if connection.task is not None and not connection.task.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(connection.task), timeout=5.0)

    async def _reap(self, connection: _Connection) -> None:
        """Stop a run once that is safe. A run that ran out of QR codes never gets there: neonize
        then waits for a device id forever, holding its executor worker."""
        deadline = asyncio.get_running_loop().time() + REAP_WITHIN
        while asyncio.get_running_loop().time() < deadline:
            if connection.client.stoppable:
                await self._stop_go_client(connection)
                return
            await asyncio.sleep(1.0)
        self._log.warning("neonize left a worker thread behind (pairing never completed)")

    # -- the worker: everything reported, in whatsmeow's order -----------------------------

    def _start_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"neonize-{self.instance}")

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout=5.0)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    async def _work(self) -> None:
        while True:
            generation, item = await self._queue.get()
            try:
                if generation == self._generation:
                    await self._handle(item)
            except Exception:
                self._log.exception("neonize event handling failed", item=type(item).__name__)
            finally:
                self._queue.task_done()

    async def _handle(self, item: Any) -> None:
        if isinstance(item, _Qr):
            refresh = self._qr_count
            self._qr_count += 1
            self._progress.set()
            self._qr_shown.set()
            expires_at = qr_expires_at(refresh, self._clock())
            await self._guarded(self._listener.on_qr(item.code, expires_at), "on_qr")
        elif isinstance(item, _LoginStatus):
            await self._login_status(item.status)
        elif isinstance(item, _TaskEnded):
            await self._task_ended(item)
        elif isinstance(item, nz.Connected):
            self._logged_in = True
            self._progress.set()
            await self._remember_device()
            await self._guarded(self._listener.on_open(self._account()), "on_open")
        elif isinstance(item, nz.PairStatus):
            outcome = "paired" if item.Status == nz.PairStatus.SUCCESS else "pairing failed"
            self._log.info(outcome, error=str(item.Error) or None)
        elif isinstance(item, nz.KeepAliveTimeout):
            self._log.info("WhatsApp keep-alive timed out", errors=int(item.ErrorCount))
        else:
            closed = close_reason(item)
            if closed is not None:
                await self._closed(*closed)
            else:
                await self._inbound(item)

    async def _login_status(self, status: str) -> None:
        closed = login_status_reason(status)
        if closed is None:
            self._log.info("QR scanned, device linked")
            return
        await self._closed(*closed)

    async def _task_ended(self, ended: _TaskEnded) -> None:
        await self._stop_client()
        detail = ended.error or "neonize client stopped"
        await self._report_close(connect_error_reason(detail), detail)

    async def _remember_device(self) -> None:
        me = self._connection.client.me if self._connection is not None else None
        if me is None or not me.JID.User:
            return
        jid = device_jid_str(me.JID)
        if jid == self._remembered:
            return
        try:
            await self._store.remember(self.instance, jid)
            self._remembered = jid
        except Exception:
            self._log.exception("could not record the instance's device")

    async def _forget_device(self) -> None:
        self._remembered = None
        try:
            await self._store.forget(self.instance)
        except Exception:
            self._log.exception("could not forget the instance's device")

    async def _closed(self, reason: DisconnectReason, detail: str) -> None:
        self._progress.set()
        if reason.wipes_session:
            await self._forget_device()
        if reason is DisconnectReason.NETWORK:
            self._logged_in = False  # whatsmeow reconnects by itself and reports Connected
        else:
            await self._stop_client()
        await self._report_close(reason, detail)

    async def _inbound(self, event: Any) -> None:
        mapped = inbound(event)
        if mapped is None:
            return
        data, source_id = mapped
        media: bytes | None = None
        found = downloadable(event) if isinstance(event, nz.Message) else None
        if found is not None and self._connection is not None:
            message, size = found
            if size <= MAX_INBOUND_MEDIA_BYTES:
                try:
                    media = bytes(await self._connection.client.download_any(message))
                except NeonizeError as error:
                    self._log.warning("media download failed", error=str(error))
            else:
                self._log.warning("media too large to download", size=size)
        await self._guarded(
            self._listener.on_event(data, source_id=source_id, media=media), "on_event"
        )

    def _account(self) -> Account:
        me = self._connection.client.me if self._connection is not None else None
        if me is None or not me.JID.User:
            return Account(jid=None, phone=None, push_name=None)
        return Account(
            jid=jid_str(me.JID), phone=str(me.JID.User), push_name=str(me.PushName) or None
        )

    async def _report_close(self, reason: DisconnectReason, detail: str) -> None:
        self._log.info("neonize session closed", reason=reason.value, detail=detail)
        await self._guarded(self._listener.on_close(reason, detail), "on_close")

    async def _guarded(self, call: Any, what: str) -> None:
        try:
            await call
        except Exception:
            self._log.exception("session listener failed", callback=what)


def _task_error(task: asyncio.Task[None]) -> str | None:
    if task.cancelled():
        return "connect cancelled"
    error = task.exception()
    return None if error is None else (str(error) or type(error).__name__)


def _send_error(error: Exception) -> SendError:
    """Retryable only when the message surely did not leave (not connected); after a timeout it
    may have, and sending again could deliver it twice."""
    text = str(error)
    not_sent = any(mark in text.lower() for mark in ("not connected", "not logged in"))
    return SendError("send_failed", text, retryable=not_sent)


class NeonizeEngine:
    """Opens neonize sessions whose stores live in `store`."""

    name = "neonize"

    def __init__(
        self,
        store: NeonizeStore,
        *,
        media_allow: Sequence[Network] = (),
        connect_timeout: float = 20.0,
        clock: Callable[[], datetime] = utc_now,
        client_factory: ClientFactory = NeonizeClient,
    ) -> None:
        self.store = store
        self._media_allow = tuple(media_allow)
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._client_factory = client_factory
        self.sessions: dict[str, NeonizeSession] = {}
        self._opened: list[NeonizeSession] = []

    def open_session(self, instance: str, listener: SessionListener) -> NeonizeSession:
        session = NeonizeSession(
            instance,
            listener,
            self.store,
            media_allow=self._media_allow,
            connect_timeout=self._connect_timeout,
            clock=self._clock,
            client_factory=self._client_factory,
        )
        self.sessions[instance] = session
        self._opened.append(session)
        return session

    async def close(self) -> None:
        for session in self._opened:  # replaced sessions too: they may hold workers
            await session.close()
        self._opened.clear()
        self.sessions.clear()


def store_for(settings: Settings) -> NeonizeStore:
    """Postgres (a schema per instance) when `DATABASE_URL` is set, else SQLite files in the
    data folder."""
    if settings.database_url is not None:
        return PostgresStore(settings.database_url.get_secret_value())
    return SqliteStore(settings.data_dir / "neonize")


def build_neonize_engine(settings: Settings) -> NeonizeEngine:
    return NeonizeEngine(store_for(settings), media_allow=settings.webhook_allow_cidrs)
