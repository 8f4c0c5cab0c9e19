"""One task per session: connect, follow what the session reports, reconnect, stop.

The supervisor owns every decision about a session, reconnecting included (it is the only
reconnect path: engines do not reconnect by themselves); the pure `lifecycle.step` says what a
report means, and the supervisor applies it: the status bucket, the `connection.*` event, the
backoff. Each connect attempt opens a fresh engine session with a listener bound to a *generation*
number — the one generation counter of a session; lifecycle reports of an older generation (a
socket that already died) are dropped, as whatsmeow's `onDisconnect` ignores callbacks of a
replaced socket. Inbound events of any generation are published: a message is a fact, whichever
connection carried it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from datetime import datetime

import structlog

from connector.engine import (
    Account,
    ConnectError,
    EmitEvent,
    EncryptedVote,
    Engine,
    EngineSession,
    SendContext,
)
from connector.inbound import Inbound
from connector.lifecycle import (
    Closed,
    Connecting,
    Lifecycle,
    Opened,
    PairCodeIssued,
    Policy,
    QrShown,
    Report,
    step,
)
from connector.metrics import ERRORS, RECONNECTS, SESSIONS
from connector.reasons import DisconnectReason
from connector.status import StatusBoard
from schemas.commands import SendText
from schemas.envelope import EventData, utc_now
from schemas.events import (
    CallOffered,
    ConnectionClose,
    ConnectionConnecting,
    ConnectionFailed,
    ConnectionLoggedOut,
    ConnectionOpen,
    ConnectionPairCode,
    ConnectionQR,
)
from schemas.instances import CallPolicy, InstanceStatus, SessionState
from wabus.logs import get_logger

log = get_logger(__name__)

STOP_TIMEOUT = 15.0
"""Seconds a session gets to stop (an engine call may hang) before its task is cancelled."""


class NotConnected(Exception):
    """The session is not open and will not be soon (logged out, failed, stopped)."""

    def __init__(self, state: SessionState) -> None:
        super().__init__(f"session is {state.value}")
        self.state = state


class _Listener:
    """The listener of one connection generation; never raises into the engine."""

    def __init__(self, supervisor: SessionSupervisor, generation: int) -> None:
        self._supervisor = supervisor
        self._generation = generation

    async def on_qr(self, code: str, expires_at: datetime) -> None:
        await self._supervisor.report(self._generation, QrShown(), qr=(code, expires_at))

    async def on_pair_code(self, code: str, phone: str) -> None:
        await self._supervisor.report(self._generation, PairCodeIssued(), pair=(code, phone))

    async def on_open(self, account: Account) -> None:
        await self._supervisor.report(self._generation, Opened(), account=account)

    async def on_close(
        self, reason: DisconnectReason, detail: str, *, not_before: datetime | None = None
    ) -> None:
        await self._supervisor.report(self._generation, Closed(reason, detail, not_before))

    async def on_event(
        self,
        data: EventData,
        source_id: str | None = None,
        media: bytes | None = None,
        raw: bytes | None = None,
        poll_secret: bytes | None = None,
    ) -> None:
        supervisor = self._supervisor
        with structlog.contextvars.bound_contextvars(instance=supervisor.instance):
            try:
                if isinstance(data, CallOffered):
                    data = await supervisor.answer_call(data)
                await supervisor.inbound.event(
                    supervisor.instance, data, source_id, media, raw, poll_secret
                )
            except Exception:
                ERRORS.labels("event_dropped").inc()
                log.exception("inbound event could not be handled", source_id=source_id)

    async def on_poll_vote(self, vote: EncryptedVote) -> None:
        supervisor = self._supervisor
        with structlog.contextvars.bound_contextvars(instance=supervisor.instance):
            try:
                await supervisor.inbound.vote(supervisor.instance, vote)
            except Exception:
                ERRORS.labels("event_dropped").inc()
                log.exception("poll vote could not be handled", source_id=vote.message_id)


class SessionSupervisor:
    """Keeps one instance's session as its configuration wants it."""

    def __init__(
        self,
        instance: str,
        engine: Engine,
        emit: EmitEvent,
        inbound: Inbound,
        board: StatusBoard,
        policy: Policy,
        connector_id: str,
        rng: random.Random | None = None,
        calls: Callable[[], CallPolicy] = CallPolicy,
    ) -> None:
        self.calls = calls
        """The instance's call policy as configured now."""
        self.instance = instance
        self._engine = engine
        self._emit = emit
        self.inbound = inbound
        self._board = board
        self._policy = policy
        self._connector_id = connector_id
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.lifecycle = Lifecycle()
        self.generation = 0
        self.session: EngineSession | None = None
        self._account: Account | None = None
        self._qr: tuple[str, datetime] | None = None
        self._pair: tuple[str, str] | None = None
        self._changed = asyncio.Event()
        self._restart = asyncio.Event()
        self._stopping = False
        self._stop_detail = "stopped"
        self._report_stop = True
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        SESSIONS.labels(self.lifecycle.state.value).inc()

    # -- control --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"session:{self.instance}")

    def restart(self) -> None:
        """Connect again after a terminal state (the config was written again, pairing asked)."""
        if self.lifecycle.terminal:
            self._restart.set()

    async def stop(self, detail: str, *, report: bool = True) -> None:
        """Stop the session; `report=False` when another connector owns it now (its status and
        events are no longer ours to write)."""
        self._stopping, self._stop_detail, self._report_stop = True, detail, report
        self._changed.set()
        self._restart.set()
        if self._task:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT)
            except TimeoutError:
                log.error("session did not stop in time, cancelling it", instance=self.instance)
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for(self, states: set[SessionState], within: float) -> SessionState:
        """Wait until the session is in one of `states` or terminal; the state then."""
        await self._wait_until(
            lambda: self.lifecycle.state in states or self.lifecycle.terminal, within
        )
        return self.lifecycle.state

    async def _wait_until(self, condition: Callable[[], bool], within: float) -> None:
        async def settled() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(settled(), within)

    @property
    def account(self) -> Account | None:
        """The account the session last reported it is logged in as."""
        return self._account

    async def open_session(self, within: float) -> EngineSession:
        """The open session, waiting up to `within` seconds for a (re)connect. Raises `NotConnected`
        when the session is down for good, `TimeoutError` when it is still coming."""
        state = await self.wait_for({SessionState.OPEN}, within)
        if state is not SessionState.OPEN or self.session is None:
            raise NotConnected(state)
        return self.session

    async def answer_call(self, offer: CallOffered) -> CallOffered:
        """Reject a ringing call when the instance's policy says so, and answer the caller with
        its message; the offer comes back marked `rejected` when it was."""
        policy = self.calls()
        session = self.session
        if not policy.reject or session is None:
            return offer
        try:
            await session.reject_call(offer.from_, offer.call_id)
        except Exception as error:  # the call rings on: say so, publish the offer as it is
            ERRORS.labels("call_reject").inc()
            log.warning("call not rejected", call_id=offer.call_id, error=repr(error))
            return offer
        log.info("call rejected", call_id=offer.call_id)
        if policy.message:
            try:
                await session.send(SendText(to=offer.from_, text=policy.message), SendContext())
            except Exception as error:  # the call was rejected all the same
                ERRORS.labels("call_message").inc()
                log.warning("call rejection message not sent", error=repr(error))
        return offer.model_copy(update={"rejected": True})

    async def logout(self) -> None:
        session = self.session
        if session is not None and self.lifecycle.state is SessionState.OPEN:
            await session.logout()
            return
        await self.report(self.generation, Closed(DisconnectReason.LOGGED_OUT, "logout requested"))

    async def pair_phone(self, phone: str, within: float = 30.0) -> str:
        """Ask for a phone pairing code; needs the socket up and waiting for pairing, so a
        session that ended (logged out, failed) is restarted first."""
        if self.lifecycle.terminal and not self._stopping:
            self.restart()
            await self._wait_until(lambda: not self.lifecycle.terminal, within)
        waiting = {SessionState.QR, SessionState.PAIRING}
        state = await self.wait_for(waiting | {SessionState.OPEN}, within)
        if state not in waiting or self.session is None:
            raise NotConnected(state)
        return await self.session.pair_phone(phone)

    # -- reports --------------------------------------------------------------------------

    async def report(
        self,
        generation: int,
        report: Report,
        *,
        qr: tuple[str, datetime] | None = None,
        pair: tuple[str, str] | None = None,
        account: Account | None = None,
    ) -> None:
        with structlog.contextvars.bound_contextvars(instance=self.instance):
            if generation != self.generation:
                log.info("stale session report dropped", report=type(report).__name__)
                return
            try:
                # Shielded: the engine task that reports may be cancelled by the very transition
                # it reports (a session torn down after `qr_exhausted`); the event must still go.
                await asyncio.shield(self._apply_locked(report, qr=qr, pair=pair, account=account))
            except Exception:
                ERRORS.labels("supervisor").inc()
                log.exception("session report could not be applied", report=type(report).__name__)

    async def _apply_locked(
        self,
        report: Report,
        *,
        qr: tuple[str, datetime] | None = None,
        pair: tuple[str, str] | None = None,
        account: Account | None = None,
    ) -> None:
        async with self._lock:
            await self._apply(report, qr=qr, pair=pair, account=account)

    async def _apply(
        self,
        report: Report,
        *,
        qr: tuple[str, datetime] | None = None,
        pair: tuple[str, str] | None = None,
        account: Account | None = None,
    ) -> None:
        before = self.lifecycle
        now = utc_now()
        after = step(before, report, self._policy, self._rng, now)
        if after == before and not isinstance(report, Connecting | QrShown | PairCodeIssued):
            return
        if account is not None:
            self._account = account
        waiting = after.state in (SessionState.QR, SessionState.PAIRING)
        if waiting and qr is not None:
            self._qr = qr
        elif not waiting:
            self._qr = None
        if after.state is SessionState.PAIRING and pair is not None:
            self._pair = pair
        elif after.state not in (SessionState.PAIRING, SessionState.QR):
            self._pair = None
        await self._board.put(self._status(after, now))
        event = self._event(after, now, report)
        if event is not None:
            await self._emit(self.instance, event)
        self._set(after)  # only now may the run loop act on it (tear down, reconnect)
        log.info(
            "session state",
            state=after.state.value,
            previous=before.state.value,
            reason=after.reason.value if after.reason else None,
            attempt=after.attempt,
            retry_at=after.retry_at.isoformat() if after.retry_at is not None else None,
        )

    def _set(self, after: Lifecycle) -> None:
        if after.state is not self.lifecycle.state:
            SESSIONS.labels(self.lifecycle.state.value).dec()
            SESSIONS.labels(after.state.value).inc()
        self.lifecycle = after
        self._changed.set()

    def _status(self, current: Lifecycle, now: datetime) -> InstanceStatus:
        account = self._account
        return InstanceStatus(
            instance=self.instance,
            state=current.state,
            reason_code=current.reason.value if current.reason else None,
            reason=current.detail or None,
            attempt=current.attempt,
            next_retry_at=current.retry_at,
            jid=account.jid if account else None,
            phone=account.phone if account else None,
            push_name=account.push_name if account else None,
            qr=self._qr[0] if self._qr else None,
            qr_expires_at=self._qr[1] if self._qr else None,
            qr_refreshes=current.qr_refreshes,
            pair_code=self._pair[0] if self._pair else None,
            connector=self._connector_id,
            updated_at=now,
        )

    def _event(self, current: Lifecycle, now: datetime, report: Report) -> EventData | None:
        reason = current.reason.value if current.reason else "unknown"
        match current.state:
            case SessionState.CONNECTING:
                return ConnectionConnecting(attempt=current.attempt)
            case SessionState.QR | SessionState.PAIRING if isinstance(report, QrShown) and self._qr:
                code, expires_at = self._qr
                return ConnectionQR(
                    qr=code, expires_at=expires_at, refresh=max(current.qr_refreshes - 1, 0)
                )
            case SessionState.PAIRING if self._pair:
                return ConnectionPairCode(code=self._pair[0], phone=self._pair[1])
            case SessionState.OPEN:
                account = self._account or Account(None, None, None)
                return ConnectionOpen(
                    jid=account.jid, phone=account.phone, push_name=account.push_name
                )
            case SessionState.CLOSED:
                return ConnectionClose(
                    reason=reason,
                    will_reconnect=True,
                    attempt=current.attempt,
                    retry_at=current.retry_at or now,
                )
            case SessionState.LOGGED_OUT:
                return ConnectionLoggedOut(reason=current.detail or reason)
            case SessionState.FAILED:
                return ConnectionFailed(code=reason, reason=current.detail or reason)
            case SessionState.STOPPED:
                return ConnectionClose(reason=reason, will_reconnect=False)
        return None

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(instance=self.instance)
        why = "stopped"
        try:
            while not self._stopping:
                await self._connect()
                await self._settle()
                if self._stopping:
                    break
                await self._close_session()
                if self.lifecycle.terminal:
                    log.warning(
                        "session down until it is restarted",
                        state=self.lifecycle.state.value,
                        reason=self.lifecycle.reason.value if self.lifecycle.reason else None,
                    )
                    await self._restart.wait()  # cleared by the next `_connect`
                    continue
                reason = self.lifecycle.reason or DisconnectReason.UNKNOWN
                RECONNECTS.labels(reason.value).inc()
                await self._back_off()
            why = self._stop_detail
        except Exception as error:
            why = f"crashed: {error!r}"
            ERRORS.labels("supervisor").inc()
            log.exception("session supervisor crashed")
        finally:
            await self._close_session()
            async with self._lock:
                self._set(Lifecycle(SessionState.STOPPED, DisconnectReason.STOPPED, why))
                if self._report_stop:
                    await self._report_stopped()
            SESSIONS.labels(SessionState.STOPPED.value).dec()
            log.info("session loop exited", why=why)

    async def _report_stopped(self) -> None:
        """The last status and `connection.close`; a failure is logged, since the loop is ending
        either way and nothing will write them again."""
        try:
            await self._board.put(self._status(self.lifecycle, utc_now()))
            await self._emit(
                self.instance,
                ConnectionClose(reason=DisconnectReason.STOPPED.value, will_reconnect=False),
            )
        except Exception:
            ERRORS.labels("supervisor").inc()
            log.exception("the stopped status or its event could not be written")

    async def _back_off(self) -> None:
        """Wait until the lifecycle's `retry_at`, or until a restart or stop cuts it short."""
        retry_at = self.lifecycle.retry_at
        wait = (retry_at - utc_now()).total_seconds() if retry_at is not None else 0.0
        with contextlib.suppress(TimeoutError):  # the backoff ran out: time to connect again
            await asyncio.wait_for(self._restart.wait(), max(wait, 0.0))

    async def _connect(self) -> None:
        self.generation += 1
        generation = self.generation
        self._restart.clear()
        self.session = self._engine.open_session(self.instance, _Listener(self, generation))
        async with self._lock:
            await self._apply(Connecting())
        try:
            await self.session.connect()
        except ConnectError as error:
            await self.report(generation, Closed(error.reason, error.detail))
        except Exception as error:
            log.exception("engine connect crashed")
            await self.report(generation, Closed(DisconnectReason.UNKNOWN, repr(error)))

    async def _settle(self) -> None:
        """Wait until the lifecycle asks for action: reconnect, give up, or stop."""
        while not self._stopping and not (self.lifecycle.terminal or self.lifecycle.will_reconnect):
            self._changed.clear()
            await self._changed.wait()

    async def _close_session(self) -> None:
        """Disconnect the current connection; its later reports become stale."""
        session, self.session = self.session, None
        self.generation += 1
        if session is None:
            return
        try:
            await asyncio.wait_for(session.disconnect(), 10.0)
        except Exception:
            ERRORS.labels("disconnect").inc()
            log.exception("engine disconnect failed")
