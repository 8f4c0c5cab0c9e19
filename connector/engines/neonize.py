"""The `neonize` engine: real WhatsApp sessions through neonize (Python over whatsmeow).

The adapter reports and decides nothing: what happens to a session reaches the connector's
listener, and the connector's supervisor chooses when to connect again. What it does about
neonize (0.5.2):

- **One reconnect path: the supervisor's.** neonize exports no switch for whatsmeow's
  `EnableAutoReconnect` (on by default; the Go `Neonize()` call never changes it). So every close
  — a dropped connection (`DisconnectedEv`) included — stops the Go client: `Stop` disconnects it,
  which marks the disconnect as expected and ends whatsmeow's auto-reconnect loop, and cancels
  neonize's event loop, which returns its thread. The supervisor then backs off and opens a new
  session. A session is one connect attempt: `connect` once, then `disconnect`.
- **Stale callbacks:** the supervisor's generation number is the only one. Within a session,
  everything after its close (one close per session) is no lifecycle news; inbound messages are
  still reported.
- **Pairing happens in a child process** (`neonize_pairing.py`): neonize's Go call for an
  unpaired device cannot be ended from Python once it reaches the QR phase, so an abandoned
  in-process pairing would keep its thread forever. A device that is already paired connects in
  this process; the child hands over the paired device and exits.
- Event handlers run as independent coroutines whose exceptions neonize swallows, in no
  guaranteed order. Each handler here only enqueues (synchronously, so the queue keeps
  whatsmeow's order); one worker per session maps, downloads media, reports, and logs anything
  that fails.
- `connect()` returns a task that runs for the whole connection; a failed connect surfaces only
  as that task's error. `connect` waits until the attempt shows progress (a QR code, or logged
  in) or fails, raising `ConnectError`; a later end is reported through `on_close`.
- Go's `Stop` before neonize's call reached its event loop makes the Go side dereference a
  deleted client once `Connect` returns, and neonize calls `Stop` when a client is
  garbage-collected. Each run gets its own client (and Go uuid); `Stop` is called only once it is
  safe, and a run abandoned before that is stopped when it becomes so.
- neonize dispatches events to the first event loop it ever saw; `connect` points it at the
  running one.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog

from connector.engine import (
    Account,
    ConnectError,
    QueryError,
    SendContext,
    SendError,
    SentMessage,
    SessionListener,
)
from connector.engines import neonize_outbound as outbound
from connector.engines.neonize_lib import (
    NeonizeClient,
    NeonizeError,
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
    poll_vote,
    qr_expires_at,
    surely_not_sent,
    to_remember,
)
from connector.engines.neonize_pairing import (
    EXIT_WAIT,
    FORWARDED_EVENTS,
    PAIRING_COMMAND,
    LoginStatus,
    Paired,
    PairingError,
    PairingProcess,
    Qr,
    RunEnded,
)
from connector.engines.neonize_queries import answer_query
from connector.engines.neonize_store import (
    NeonizeStore,
    PostgresStore,
    SqliteStore,
    StoreLocation,
)
from connector.reasons import Closure, DisconnectReason
from schemas.commands import (
    MarkRead,
    Presence,
    SendContact,
    SendDelete,
    SendEdit,
    SendForward,
    SendLocation,
    SendMedia,
    SendMessage,
    SendPoll,
    SendReaction,
    SendText,
    jid_string,
)
from schemas.envelope import ContractModel, utc_now
from wabus.logs import get_logger
from wabus.settings import Settings
from wabus.ssrf import Network

__all__ = ["NeonizeClient", "NeonizeEngine", "NeonizeSession", "build_neonize_engine"]

log = get_logger(__name__)

MAX_INBOUND_MEDIA_BYTES = 100 * 1024 * 1024
"""Inbound media above this is announced (kind, mimetype, size, sha256) but not downloaded."""

REAP_WITHIN = 600.0
"""How long a run being wound down may take to reach a point where it can be stopped."""

STOP_WAIT = 5.0
"""Seconds neonize's connect gets to end after `Stop` (it returns once Go's loop sees it)."""

DRAIN_WAIT = 5.0
"""Seconds a closing session's worker gets to report what is already queued."""

_INBOUND_EVENTS = (
    nz.Message,
    nz.Receipt,
    nz.ChatPresence,
    nz.Presence,
    nz.GroupInfoEvent,
    nz.JoinedGroup,
    nz.CallOffer,
    nz.CallOfferNotice,
    nz.CallTerminate,
)
"""Facts that are published whenever they arrive, even after the session closed: messages,
receipts, typing, a subscribed contact's presence, group changes, calls (whatsmeow's
`CallReject` is not passed on by neonize 0.5.2)."""

SUBSCRIBED_EVENTS = (*_INBOUND_EVENTS, nz.Connected, *FORWARDED_EVENTS)
"""Every event a session handles: the facts it publishes, and the connection events a pairing
child forwards too (plus `Connected`, which a child keeps to itself)."""

ClientFactory = Callable[[str, str], Any]
"""(store location, uuid) -> a `NeonizeClient`; tests pass one whose network side is faked."""


class _GoRun:
    """One in-process run of neonize's connect for a paired device, with a client of its own
    (a Go uuid per run), so that a run being wound down never mixes with the next one."""

    def __init__(self, client: Any, instance_log: structlog.stdlib.BoundLogger) -> None:
        self.client = client
        self.task: asyncio.Task[None] | None = None
        self.reaper: asyncio.Task[None] | None = None
        self.ended: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._log = instance_log

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def released(self) -> bool:
        """neonize's Go call has returned (its thread is free) and nothing waits to stop it."""
        reaping = self.reaper is not None and not self.reaper.done()
        return not self.running and not reaping

    async def start(self) -> None:
        """Start neonize's connect. Raises `NeonizeError` when it refuses at once."""
        task = self.task = await self.client.connect()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not self.ended.done():
            self.ended.set_result(_task_error(task) or "neonize stopped")

    async def stop(self) -> None:
        """Stop the Go client now if that is safe, else as soon as it is (in the background)."""
        if self.client.stoppable:
            await self._stop_now()
        elif self.reaper is None:
            self.reaper = asyncio.create_task(self._reap())

    async def _stop_now(self) -> None:
        try:
            await self.client.stop()
        except Exception:
            self._log.exception("stopping the neonize client failed")
        task = self.task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=STOP_WAIT)
            if not task.done():
                self._log.warning("neonize's connect did not end after Stop", waited=STOP_WAIT)

    async def _reap(self) -> None:
        """Stop the run once that is safe: a paired device's run gets there when its dial ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REAP_WITHIN
        while loop.time() < deadline:
            if self.client.stoppable:
                await self._stop_now()
                return
            await asyncio.sleep(1.0)
        self._log.warning("neonize left a worker thread behind (its connect never settled)")


_Run = _GoRun | PairingProcess


class NeonizeSession:
    """One connect attempt of one instance's linked device: `connect` once, then `disconnect`."""

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
        pairing_command: Sequence[str] = PAIRING_COMMAND,
        on_released: Callable[[NeonizeSession], None] | None = None,
    ) -> None:
        self.instance = instance
        self._client_factory = client_factory
        self._pairing_command = tuple(pairing_command)
        self._listener = listener
        self._store = store
        self._media_allow = tuple(media_allow)
        self._connect_timeout = connect_timeout
        self._pair_timeout = pair_timeout
        self._clock = clock
        self._on_released = on_released
        self._run: _Run | None = None
        self._retired: list[_Run] = []
        self._started = False
        self._connecting = False
        self._closed = False
        self._logged_in = False
        self._qr_count = 0
        self._progress = asyncio.Event()
        self._qr_shown = asyncio.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._remembered: str | None = None
        self._own: frozenset[str] = frozenset()
        self._connect_lock = asyncio.Lock()
        self._log = log.bind(instance=instance)

    @property
    def running(self) -> bool:
        """Whether a run of neonize (in this process, or a pairing child) is under way."""
        return self._run is not None and self._run.running

    @property
    def pairing(self) -> bool:
        """Whether the session is pairing a new device (in a child process)."""
        return isinstance(self._run, PairingProcess) and self._run.running

    @property
    def pairing_pid(self) -> int | None:
        """The pairing child's process id while there is one (for diagnostics and tests)."""
        run = self._run
        return run.pid if isinstance(run, PairingProcess) else None

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    @property
    def released(self) -> bool:
        """Nothing of the session is left: no run, no pairing child, no worker, no reaper."""
        runs = [self._run] if self._run is not None else []
        worker_done = self._worker is None or self._worker.done()
        return worker_done and all(run.released for run in [*runs, *self._retired])

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._started:
                raise RuntimeError("a neonize session connects once; open a new session")
            self._started = True
            try:
                location = await self._store.location(self.instance)
            except Exception as error:
                self._closed = True
                self._log.warning("neonize store unavailable", error=str(error))
                raise ConnectError(
                    DisconnectReason.UNKNOWN, f"store unavailable: {error}"
                ) from error
            self._start_worker()
            self._connecting = True  # until connect returns, it reports the run's end itself
            try:
                run = await self._start_run(location)
                await self._await_progress(run)
            finally:
                self._connecting = False

    async def _start_run(self, location: StoreLocation) -> _Run:
        """A pairing child for a device that is not paired yet, else an in-process run."""
        quiet_library_logs()
        aio_events.event_global_loop = asyncio.get_running_loop()
        uuid = f"wabus-{self.instance}-{secrets.token_hex(4)}"
        run: _Run
        if location.jid is None:
            run = PairingProcess(
                location,
                uuid,
                self._queue.put_nowait,
                command=self._pairing_command,
                instance=self.instance,
            )
        else:
            run = _GoRun(self._new_client(location, uuid), self._log)
        self._run = run
        self._qr_count = 0
        run.ended.add_done_callback(lambda ended: self._run_ended(run, ended.result()))
        try:
            await run.start()
        except (NeonizeError, OSError) as error:
            self._closed = True
            await self._stop_run()
            reason = connect_error_reason(str(error))
            raise ConnectError(reason, str(error) or type(error).__name__) from error
        return run

    async def _await_progress(self, run: _Run) -> None:
        """Wait until the run shows progress (a QR code, logged in) or ends; an end before
        anything else was reported is this connect's failure."""
        progress: asyncio.Future[Any] = asyncio.ensure_future(self._progress.wait())
        ended: asyncio.Future[Any] = run.ended
        try:
            await asyncio.wait(
                {ended, progress},
                timeout=self._connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            progress.cancel()
        if run.ended.done() and not self._closed:
            self._closed = True  # this ConnectError is the session's close
            detail = run.ended.result() or "neonize stopped before connecting"
            reason = connect_error_reason(detail)
            self._log.warning("neonize connect failed", reason=reason.value, detail=detail)
            await self._stop_run()
            raise ConnectError(reason, detail)

    def _run_ended(self, run: _Run, error: str | None) -> None:
        if run is self._run and not self._connecting:
            self._queue.put_nowait(RunEnded(error))

    async def disconnect(self) -> None:
        """Stop the run; `on_close(stopped)` unless the session had already ended."""
        already_closed, self._closed = self._closed, True
        await self._stop_run()
        if not already_closed:
            await self._report_close(Closure(DisconnectReason.STOPPED, "disconnected by wabus"))
        await self._stop_worker()
        self._check_released()

    def _build(self, message: SendMessage, context: SendContext, now_ms: int) -> Any:
        """The waE2E message of every kind but media (built after its upload)."""
        own = self._account().jid
        if isinstance(message, SendText):
            return outbound.build_text(message, context, own)
        if isinstance(message, SendLocation):
            return outbound.build_location(message, context, own)
        if isinstance(message, SendReaction):
            return outbound.build_reaction(message, context, own, now_ms)
        if isinstance(message, SendPoll):
            return outbound.build_poll(message, context, own)
        if isinstance(message, SendEdit):
            return outbound.build_edit(message, now_ms)
        if isinstance(message, SendDelete):
            return outbound.build_delete(message, context, own)
        if isinstance(message, SendContact):
            return outbound.build_contacts(message, context, own)
        assert isinstance(message, SendForward)
        assert context.target is not None
        return outbound.build_forward(context.target)

    async def send(self, message: SendMessage, context: SendContext) -> SentMessage:
        client = self._logged_in_client()
        if isinstance(message, SendMedia):
            assert context.media is not None  # prepared by the connector
            try:
                upload = await client.upload(context.media.data, outbound.media_type(message))
            except NeonizeError as error:
                raise SendError("upload_failed", str(error), retryable=True) from error
            built = outbound.build_media(
                message, upload, context.media, context, self._account().jid
            )
        else:
            built = self._build(message, context, int(time.time() * 1000))
        try:
            response = await client.send_message(outbound.to_jid(message.to), built)
        except NeonizeError as error:
            # Retryable only when the message surely did not leave; after a timeout it may have,
            # and sending again could deliver it twice.
            text = str(error)
            raise SendError("send_failed", text, retryable=surely_not_sent(text)) from error
        return SentMessage(
            message_id=str(response.ID),
            chat=jid_string(message.to),
            timestamp=from_unix(int(response.Timestamp)) if response.Timestamp else self._clock(),
            raw=outbound.content_to_remember(built),
            poll_secret=outbound.poll_secret_of(built),
        )

    async def pair_phone(self, phone: str) -> str:
        """A phone pairing code, from the pairing child once WhatsApp offered a QR code
        (whatsmeow pairs by phone over the socket that waits for a scan)."""
        if self._logged_in:
            raise SendError("already_paired", "this instance is already linked to WhatsApp")
        run = self._run
        if not isinstance(run, PairingProcess) or not run.running:
            raise SendError("not_connected", "the session is not pairing", retryable=True)
        try:
            await asyncio.wait_for(self._qr_shown.wait(), self._pair_timeout)
        except TimeoutError as error:
            raise SendError(
                "not_connected", "WhatsApp did not offer pairing in time", retryable=True
            ) from error
        try:
            code = await run.pair_phone(phone, self._pair_timeout)
        except PairingError as error:
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
        already_closed, self._closed = self._closed, True
        await self._stop_run()
        await self._forget_device()
        if not already_closed:
            await self._report_close(Closure(DisconnectReason.LOGGED_OUT, "logged out on request"))

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

    async def query(self, name: str, request: ContractModel) -> ContractModel:
        run = self._run
        if not isinstance(run, _GoRun) or not self._logged_in:
            raise QueryError("instance_not_open", "the WhatsApp session is not connected")
        return await answer_query(run.client, name, request)

    async def reject_call(self, caller: str, call_id: str) -> None:
        """Decline a ringing call; `caller` is the offer's `from` (whatsmeow drops a device
        part)."""
        client = self._logged_in_client()
        try:
            await client.reject_call(outbound.to_jid(caller), call_id)
        except NeonizeError as error:
            raise SendError("reject_failed", str(error), retryable=True) from error

    async def close(self) -> None:
        """Release everything without reporting (engine shutdown): a pairing child is killed, a
        Go client stopped if that is safe (the process is ending either way)."""
        self._closed = True
        await self._stop_run()
        await self._stop_worker()
        reapers = {run.reaper for run in self._retired if isinstance(run, _GoRun) and run.reaper}
        for reaper in reapers:
            reaper.cancel()
        if reapers:
            await asyncio.wait(reapers)
        self._check_released()

    # -- runs ----------------------------------------------------------------------------------

    def _new_client(self, location: StoreLocation, uuid: str) -> Any:
        client = self._client_factory(location.name, uuid)
        # Set after construction: neonize's `jid=` argument would also replace the uuid.
        client.new_device = location.new_device
        if location.jid is not None:
            client.jid = parse_device_jid(location.jid)
        loop = asyncio.get_running_loop()

        def login_status(status: str) -> None:  # on a Go thread: nothing may escape
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, LoginStatus(status))
            except RuntimeError:  # the loop is closed: the process is ending
                self._log.warning("neonize login status after the loop closed", status=status)

        client.login_status = login_status
        client.qr(self._on_qr)
        for event_type in SUBSCRIBED_EVENTS:
            client.event(event_type)(self._on_event)
        return client

    async def _on_qr(self, client: Any, data: bytes) -> None:
        self._queue.put_nowait(Qr(data.decode(errors="replace")))

    async def _on_event(self, client: Any, event: Any) -> None:
        self._queue.put_nowait(event)

    async def _stop_run(self) -> None:
        """End the current run; its later reports are no news."""
        run, self._run = self._run, None
        self._logged_in = False
        if run is None:
            return
        self._retired.append(run)
        await run.stop()
        if isinstance(run, _GoRun) and run.reaper is not None:
            run.reaper.add_done_callback(lambda _: self._check_released())

    def _check_released(self) -> None:
        if self._on_released is not None and self._closed and self.released:
            self._on_released(self)

    def _logged_in_client(self) -> Any:
        run = self._run
        if not isinstance(run, _GoRun) or not self._logged_in:
            raise SendError("not_connected", "the session is not connected", retryable=True)
        return run.client

    # -- the worker: everything reported, in whatsmeow's order -------------------------------

    def _start_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"neonize-{self.instance}")

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout=DRAIN_WAIT)
        except TimeoutError:
            self._log.warning(
                "neonize events dropped at close", unreported=self._queue.qsize(), waited=DRAIN_WAIT
            )
        worker.cancel()
        await asyncio.wait({worker})  # the worker's cancellation, not ours: ours propagates

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if self._closed and not isinstance(item, _INBOUND_EVENTS):
                    self._log.debug("report after the close dropped", item=type(item).__name__)
                else:
                    await self._handle(item)
            except Exception:
                self._log.exception("neonize event handling failed", item=type(item).__name__)
            finally:
                self._queue.task_done()

    async def _handle(self, item: Any) -> None:
        if isinstance(item, Qr):
            refresh = self._qr_count
            self._qr_count += 1
            self._progress.set()
            self._qr_shown.set()
            expires_at = qr_expires_at(refresh, self._clock())
            await self._guarded(self._listener.on_qr(item.code, expires_at), "on_qr")
        elif isinstance(item, LoginStatus):
            await self._login_status(item.status)
        elif isinstance(item, RunEnded):
            detail = item.error or "neonize client stopped"
            await self._close(Closure(connect_error_reason(detail), detail))
        elif isinstance(item, Paired):
            await self._paired(item.jid)
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
            closure = close_reason(item, self._clock())
            if closure is not None:
                await self._close(closure)
            else:
                await self._inbound(item)

    async def _login_status(self, status: str) -> None:
        closure = login_status_reason(status)
        if closure is None:
            self._log.info("QR scanned, device linked")
            return
        await self._close(closure)

    async def _paired(self, jid: str) -> None:
        """The pairing child linked the device: it exits, and the device connects here."""
        pairing = self._run
        if not isinstance(pairing, PairingProcess):
            return
        self._run = None
        self._retired.append(pairing)
        self._log.info("device paired", device=jid)
        await self._remember(jid)
        await pairing.stop(exit_within=EXIT_WAIT)
        location = StoreLocation(name=pairing.location.name, jid=jid)
        try:
            await self._start_run(location)
        except ConnectError as error:  # the run is stopped and the session closed: report it
            await self._report_close(Closure(error.reason, error.detail))

    async def _remember_device(self) -> None:
        run = self._run
        me = run.client.me if isinstance(run, _GoRun) else None
        if me is not None and me.JID.User:
            await self._remember(device_jid_str(me.JID))

    async def _remember(self, jid: str) -> None:
        if jid == self._remembered:
            return
        try:
            await self._store.remember(self.instance, jid)
            self._remembered = jid
        except Exception:
            self._log.exception("could not record the instance's device", device=jid)

    async def _forget_device(self) -> None:
        self._remembered = None
        try:
            await self._store.forget(self.instance)
        except Exception:
            self._log.exception("could not forget the instance's device")

    async def _close(self, closure: Closure) -> None:
        """The session's one close: stop the run (whatever the reason, so whatsmeow never
        reconnects by itself), and report it."""
        self._closed = True
        self._progress.set()
        if closure.reason.wipes_session:
            await self._forget_device()
        await self._stop_run()
        await self._report_close(closure)

    async def _inbound(self, event: Any) -> None:
        vote = poll_vote(event) if isinstance(event, nz.Message) else None
        if vote is not None:
            await self._guarded(self._listener.on_poll_vote(vote), "on_poll_vote")
            return
        mapped = inbound(event, self._own_addresses())
        if not isinstance(event, nz.Message):  # no media, nothing to remember
            for data, source_id in mapped:
                await self._guarded(self._listener.on_event(data, source_id=source_id), "on_event")
            return
        if not mapped:
            return
        [(data, source_id)] = mapped
        raw, secret = to_remember(event)
        media: bytes | None = None
        found = downloadable(event)
        run = self._run
        if found is not None and isinstance(run, _GoRun):
            message, size = found
            if size <= MAX_INBOUND_MEDIA_BYTES:
                try:
                    media = bytes(await run.client.download_any(message))
                except NeonizeError as error:
                    self._log.warning("media download failed", error=str(error))
            else:
                self._log.warning("media too large to download", size=size)
        await self._guarded(
            self._listener.on_event(
                data, source_id=source_id, media=media, raw=raw, poll_secret=secret
            ),
            "on_event",
        )

    def _own_addresses(self) -> frozenset[str]:
        """The account's addresses (phone JID, LID) as neonize last said them; kept past the
        run, for what arrives after the close."""
        run = self._run
        me = run.client.me if isinstance(run, _GoRun) else None
        if me is not None:
            jids = [me.JID, me.LID if me.HasField("LID") else None]
            found = frozenset(jid_str(jid) for jid in jids if jid is not None and jid.User)
            if found:
                self._own = found
        return self._own

    def _account(self) -> Account:
        run = self._run
        me = run.client.me if isinstance(run, _GoRun) else None
        if me is None or not me.JID.User:
            return Account(jid=None, phone=None, push_name=None)
        return Account(
            jid=jid_str(me.JID), phone=str(me.JID.User), push_name=str(me.PushName) or None
        )

    async def _report_close(self, closure: Closure) -> None:
        self._log.info(
            "neonize session closed",
            reason=closure.reason.value,
            detail=closure.detail,
            not_before=closure.not_before.isoformat() if closure.not_before else None,
        )
        await self._guarded(
            self._listener.on_close(closure.reason, closure.detail, not_before=closure.not_before),
            "on_close",
        )

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


class NeonizeEngine:
    """Opens neonize sessions whose stores live in `store`; forgets each one once nothing of it
    is left (no run, pairing child, worker or reaper)."""

    name = "neonize"

    def __init__(
        self,
        store: NeonizeStore,
        *,
        media_allow: Sequence[Network] = (),
        connect_timeout: float = 20.0,
        clock: Callable[[], datetime] = utc_now,
        client_factory: ClientFactory = NeonizeClient,
        pairing_command: Sequence[str] = PAIRING_COMMAND,
    ) -> None:
        self.store = store
        self._media_allow = tuple(media_allow)
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._client_factory = client_factory
        self._pairing_command = tuple(pairing_command)
        self.sessions: dict[str, NeonizeSession] = {}
        self._opened: list[NeonizeSession] = []

    @property
    def opened(self) -> tuple[NeonizeSession, ...]:
        """Sessions not released yet: the current one of each instance, and replaced ones that
        still hold a run, a pairing child, a worker or a reaper."""
        return tuple(self._opened)

    def open_session(self, instance: str, listener: SessionListener) -> NeonizeSession:
        session = NeonizeSession(
            instance,
            listener,
            self.store,
            media_allow=self._media_allow,
            connect_timeout=self._connect_timeout,
            clock=self._clock,
            client_factory=self._client_factory,
            pairing_command=self._pairing_command,
            on_released=self._released,
        )
        self.sessions[instance] = session
        self._opened.append(session)
        return session

    def _released(self, session: NeonizeSession) -> None:
        if session in self._opened:
            self._opened.remove(session)
        if self.sessions.get(session.instance) is session:
            del self.sessions[session.instance]

    async def close(self) -> None:
        for session in list(self._opened):  # replaced sessions too: they may hold workers
            await session.close()
        self._opened.clear()
        self.sessions.clear()


def store_for(settings: Settings) -> NeonizeStore:
    """Postgres (all instances in one database, a device table beside whatsmeow's) when
    `DATABASE_URL` is set, else one SQLite file per instance in the data folder."""
    if settings.database_url is not None:
        return PostgresStore(settings.database_url.get_secret_value())
    return SqliteStore(settings.data_dir / "neonize")


def build_neonize_engine(settings: Settings) -> NeonizeEngine:
    return NeonizeEngine(store_for(settings), media_allow=settings.webhook_allow_cidrs)
