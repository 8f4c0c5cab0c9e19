"""Consumes `WA_COMMANDS` and runs each command through its instance's session, then acks.

Commands are dispatched to one *lane* per instance: a queue and a worker that runs that instance's
commands in order, paced, without holding up any other instance. The ack comes last, after the
outcome is recorded and published: a connector that dies mid-command gets the command redelivered
rather than losing it, and the sends bucket keeps a redelivered send from going out twice.
Queued commands are kept alive with `in_progress()` so a long pacing queue is not redelivered.

Handlers never raise into the loop: a failing send becomes a `message.failed`, other commands
that cannot be carried out are logged and counted (`wabus_connector_errors_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import BaseModel, ValidationError

from connector.engine import EmitEvent, EngineSession, SendError
from connector.instances import InstanceManager
from connector.metrics import COMMANDS, ERRORS, SEND_SECONDS
from connector.pacing import Pacing, send_delay
from connector.sends import OUTCOME_UNKNOWN, SendLedger
from connector.supervisor import NotConnected, SessionSupervisor
from connector.waiting import first_event, unless_stopped
from schemas.commands import (
    LOGOUT_COMMAND,
    MARK_READ_COMMAND,
    PAIR_PHONE_COMMAND,
    PRESENCE_COMMAND,
    SEND_COMMAND,
    MarkRead,
    PairPhone,
    Presence,
    SendMessage,
    SendText,
    parse_send,
)
from schemas.envelope import RawEnvelope
from schemas.events import MessageFailed, MessageSent
from schemas.instances import SendRecord, SendState
from schemas.subjects import Topology, parse_subject
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

CONSUMER = "connector"
FINISH_TIMEOUT = 10.0
"""Seconds a shutdown waits for commands already running."""
OPEN_WAIT = 20.0
"""How long a command waits for its session to (re)open before it is handed back to the stream."""


class Outcome(Enum):
    DONE = "done"
    LATER = "later"
    """Not carried out yet (session still coming up): nak, redelivered after a delay."""


Handler = Callable[[SessionSupervisor, RawEnvelope, "Lane"], Awaitable[Outcome]]


def validation_summary(error: ValidationError) -> str:
    """`field: message; …` — short enough for an event, precise enough to fix the request."""
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors()
    )


@dataclass
class Lane:
    """One instance's command queue, its worker, and its pacing clock."""

    queue: asyncio.Queue[Msg] = field(default_factory=asyncio.Queue)
    waiting: dict[int, Msg] = field(default_factory=dict)
    """Stream sequence → command not yet finished (queued or running)."""
    last_sent_at: float | None = None
    worker: asyncio.Task[None] | None = None
    busy: bool = False


class CommandConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        instances: InstanceManager,
        emit: EmitEvent,
        ledger: SendLedger,
        pacing: Pacing,
        ack_wait: float = 30.0,
        reconnects: Callable[[], int] = lambda: 0,
        rng: random.Random | None = None,
    ) -> None:
        self._ack_wait = ack_wait
        self._reconnects = reconnects
        self._js = js
        self._topology = topology
        self._instances = instances
        self._emit = emit
        self._ledger = ledger
        self._pacing = pacing
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._lanes: dict[str, Lane] = {}
        self._stopping = False
        self._unsent_claims: set[tuple[str, str]] = set()
        """Sends whose `sending` record could not be confirmed and that were not sent."""
        self._handlers: dict[str, Handler] = {
            SEND_COMMAND: self._send,
            PAIR_PHONE_COMMAND: self._pair_phone,
            LOGOUT_COMMAND: self._logout,
            MARK_READ_COMMAND: self._read,
            PRESENCE_COMMAND: self._presence,
        }

    # -- fetching -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch until `stop`. The pull subscription is bound again whenever fetching keeps
        failing (after a server restart it may be gone: nats.py #504)."""
        keeper = asyncio.create_task(self._keep_alive(stop))
        try:
            while not stop.is_set():
                try:
                    await self._fetch_loop(stop)
                except Exception as error:
                    ERRORS.labels("command_fetch").inc()
                    log.warning("command subscription lost, binding again", error=repr(error))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await self._finish_running()
            keeper.cancel()
            workers = [lane.worker for lane in self._lanes.values() if lane.worker]
            for worker in workers:
                worker.cancel()
            await asyncio.gather(keeper, *workers, return_exceptions=True)
            log.info("command consumer stopped")

    async def _finish_running(self) -> None:
        """On shutdown, let commands already handed to the engine finish (a send cut off
        mid-call would come back as `outcome_unknown`); queued ones stay unacked and are
        redelivered to the next connector."""
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + FINISH_TIMEOUT
        while any(lane.busy for lane in self._lanes.values()):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("commands still running at shutdown are cut off")
                return
            await asyncio.sleep(0.02)

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        subscription = await self._js.pull_subscribe(
            self._topology.all_commands,
            durable=CONSUMER,
            stream=self._topology.commands_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=self._ack_wait, max_ack_pending=1024
            ),
        )
        log.info("consuming commands", stream=self._topology.commands_stream)
        failures = 0
        bound_at = self._reconnects()
        try:
            while not stop.is_set():
                if self._reconnects() != bound_at:
                    log.info("NATS reconnected: binding the command subscription again")
                    return
                try:
                    fetched = await unless_stopped(subscription.fetch(batch=64, timeout=1.0), stop)
                    messages = fetched or []
                except (NatsTimeoutError, TimeoutError):
                    failures = 0
                    continue
                except Exception as error:
                    failures += 1
                    if failures >= 5:
                        raise
                    log.warning("command fetch failed", error=repr(error))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
                    continue
                failures = 0
                for message in messages:
                    await self.dispatch(message)
        finally:
            # A pull subscription left open makes the connection's drain wait for its timeout.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def dispatch(self, message: Msg) -> None:
        """Queue a command on its instance's lane (or refuse it at once)."""
        try:
            _, instance, _ = parse_subject(message.subject)
        except ValueError as error:
            log.error("unreadable command dropped", subject=message.subject, error=str(error))
            await message.term()
            return
        lane = self._lanes.get(instance)
        if lane is None:
            lane = self._lanes[instance] = Lane()
            lane.worker = asyncio.create_task(self._work(instance, lane), name=f"lane:{instance}")
        sequence = message.metadata.sequence.stream
        if sequence in lane.waiting:
            return  # redelivered while still queued here: the queued copy will ack
        lane.waiting[sequence] = message
        lane.queue.put_nowait(message)

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        """Tell JetStream that queued commands are being worked on, so they are not redelivered
        while they wait for their turn."""
        while not stop.is_set():
            await first_event(stop, within=self._ack_wait / 3)
            for lane in self._lanes.values():
                for message in list(lane.waiting.values()):
                    with contextlib.suppress(Exception):
                        await message.in_progress()

    async def _work(self, instance: str, lane: Lane) -> None:
        structlog.contextvars.bind_contextvars(instance=instance)
        while not self._stopping:
            message = await lane.queue.get()
            if self._stopping:
                return
            lane.busy = True
            try:
                await self.handle(instance, lane, message)
            except UNAVAILABLE as error:
                ERRORS.labels("command_nats_unavailable").inc()
                log.warning(
                    "NATS unavailable mid-command; it will be redelivered", error=repr(error)
                )
            except Exception:
                ERRORS.labels("command_crashed").inc()
                log.exception("command handling crashed; it will be redelivered")
            finally:
                lane.busy = False
                lane.waiting.pop(message.metadata.sequence.stream, None)

    # -- executing ------------------------------------------------------------------------

    async def handle(self, instance: str, lane: Lane, message: Msg) -> None:
        _, _, command = parse_subject(message.subject)
        try:
            envelope = RawEnvelope.model_validate_json(message.data)
        except ValueError as error:
            log.error("unreadable command dropped", command=command, error=str(error))
            await message.term()
            return
        handler = self._handlers.get(command)
        if handler is None:
            log.error("unknown command dropped", command=command)
            await message.term()
            return
        supervisor = self._instances.get(instance)
        if supervisor is None and self._instances.held_elsewhere(instance):
            await message.nak(delay=1.0)  # another connector holds it (leases): let it take it
            return
        if supervisor is None:
            if self._instances.exists(instance):
                code, reason = "instance_not_connected", "the instance is stopped or not running"
            else:
                code, reason = "unknown_instance", "no such instance"
            await self._refuse(instance, command, envelope, code, reason)
            await message.ack()
            return
        outcome = await handler(supervisor, envelope, lane)
        if outcome is Outcome.LATER:
            await message.nak(delay=2.0)
            return
        COMMANDS.labels(command, "done").inc()
        await message.ack()

    async def _refuse(
        self, instance: str, command: str, envelope: RawEnvelope, code: str, reason: str
    ) -> None:
        ERRORS.labels(code).inc()
        COMMANDS.labels(command, code).inc()
        log.warning("command refused", command=command, command_id=envelope.id, code=code)
        if command == SEND_COMMAND:
            to = envelope.data.get("to") if isinstance(envelope.data, dict) else None
            failed = MessageFailed(
                command_id=envelope.id, to=to if isinstance(to, str) else None, code=code,
                reason=reason,
            )  # fmt: skip
            await self._ledger.write_until_stored(
                instance, envelope.id, SendState.FAILED, error_code=code, error=reason
            )
            await self._emit(instance, failed, source_id=envelope.id)

    async def _send(
        self, supervisor: SessionSupervisor, envelope: RawEnvelope, lane: Lane
    ) -> Outcome:
        instance, command_id = supervisor.instance, envelope.id
        try:
            request = parse_send(envelope.data)
        except ValidationError as error:
            await self._fail(
                instance, command_id, None, "invalid_command", validation_summary(error)
            )
            return Outcome.DONE
        record = await self._ledger.get(instance, command_id)
        key = (instance, command_id)
        unsent = key in self._unsent_claims
        if record is not None and not (unsent and record.state is SendState.SENDING):
            await self._answer_from_record(record, request)
            return Outcome.DONE
        try:
            session = await supervisor.open_session(OPEN_WAIT)
        except TimeoutError:
            return Outcome.LATER
        except NotConnected as error:
            await self._fail(instance, command_id, request.to, "instance_not_connected", str(error))
            return Outcome.DONE
        await self._pace(lane, session, request)
        try:
            claimed = await self._ledger.claim(instance, command_id, retake=unsent)
        except UNAVAILABLE:
            # The `sending` record may still land (nats-py flushes buffered writes on
            # reconnect); remember that this process never sent it, so the redelivery may.
            self._unsent_claims.add(key)
            return Outcome.LATER
        if not claimed:
            return Outcome.LATER  # another delivery of it is being sent right now
        self._unsent_claims.discard(key)
        started = time.perf_counter()
        try:
            sent = await session.send(request)
        except SendError as error:
            await self._fail(
                instance, command_id, request.to, error.code, error.reason, error.retryable
            )
            return Outcome.DONE
        except Exception as error:
            log.exception("engine send crashed", command_id=command_id)
            await self._fail(instance, command_id, request.to, "engine_error", type(error).__name__)
            return Outcome.DONE
        finally:
            lane.last_sent_at = time.monotonic()
        SEND_SECONDS.observe(time.perf_counter() - started)
        # `updated_at` = WhatsApp's timestamp, so an answer from the record is the same event
        record = await self._ledger.write_until_stored(
            instance,
            command_id,
            SendState.SENT,
            message_id=sent.message_id,
            chat=sent.chat,
            now=sent.timestamp,
        )
        log.info("message sent", command_id=command_id, message_id=sent.message_id)
        await self._emit(
            instance,
            MessageSent(
                command_id=command_id,
                message_id=sent.message_id,
                to=request.to,
                chat=sent.chat,
                timestamp=sent.timestamp,
            ),
            source_id=command_id,
        )
        return Outcome.DONE

    async def _pace(self, lane: Lane, session: EngineSession, request: SendMessage) -> None:
        delay = send_delay(self._pacing, lane.last_sent_at, time.monotonic(), self._rng)
        if delay > 0:
            await asyncio.sleep(delay)
        if self._pacing.typing > 0 and isinstance(request, SendText):
            with contextlib.suppress(Exception):
                await session.set_presence(Presence(chat=request.to, state="composing"))
            await asyncio.sleep(self._pacing.typing)

    async def _answer_from_record(self, record: SendRecord, request: SendMessage) -> None:
        """A redelivered send: answer as the first delivery did (same event id), never resend."""
        instance, command_id = record.instance, record.command_id
        if record.state is SendState.SENT and record.message_id:
            log.info("redelivered send already sent, answered again", command_id=command_id)
            data = MessageSent(
                command_id=command_id,
                message_id=record.message_id,
                to=request.to,
                chat=record.chat or request.to,
                timestamp=record.updated_at,
            )
            await self._emit(instance, data, source_id=command_id)
            return
        if record.state is SendState.FAILED:
            failed = MessageFailed(
                command_id=command_id, to=request.to, code=record.error_code or "failed",
                reason=record.error or "failed",
            )  # fmt: skip
            await self._emit(instance, failed, source_id=command_id)
            return
        # `sending`: the connector stopped between handing the message to WhatsApp and recording
        # the answer. It may or may not have gone out; sending again could duplicate it.
        log.warning("send outcome unknown after a restart, not resending", command_id=command_id)
        await self._fail(
            instance,
            command_id,
            request.to,
            OUTCOME_UNKNOWN,
            "the connector stopped while this message was being sent; it may or may not have "
            "been delivered, and it is not sent again",
        )

    async def _fail(
        self,
        instance: str,
        command_id: str,
        to: str | None,
        code: str,
        reason: str,
        retryable: bool = False,
    ) -> None:
        log.warning("send failed", command_id=command_id, code=code)
        ERRORS.labels(code).inc()
        COMMANDS.labels(SEND_COMMAND, code).inc()
        await self._ledger.write_until_stored(
            instance, command_id, SendState.FAILED, error_code=code, error=reason
        )
        failed = MessageFailed(
            command_id=command_id, to=to, code=code, reason=reason, retryable=retryable
        )
        await self._emit(instance, failed, source_id=command_id)

    def _parse(self, model: type[ModelT], envelope: RawEnvelope) -> ModelT | None:
        try:
            return model.model_validate(envelope.data)
        except ValidationError as error:
            ERRORS.labels("invalid_command").inc()
            log.warning("invalid command", command=envelope.type, error=validation_summary(error))
            return None

    async def _attempt(self, command: str, act: Callable[[], Awaitable[object]]) -> Outcome:
        try:
            await act()
        except TimeoutError:
            return Outcome.LATER
        except NotConnected as error:
            ERRORS.labels("instance_not_connected").inc()
            log.warning("command not carried out", command=command, error=str(error))
        except Exception as error:
            ERRORS.labels("engine_error").inc()
            log.warning("command failed in the engine", command=command, error=repr(error))
        return Outcome.DONE

    async def _pair_phone(
        self, supervisor: SessionSupervisor, envelope: RawEnvelope, lane: Lane
    ) -> Outcome:
        request = self._parse(PairPhone, envelope)
        if request is None:
            return Outcome.DONE
        return await self._attempt(envelope.type, lambda: supervisor.pair_phone(request.phone))

    async def _logout(
        self, supervisor: SessionSupervisor, envelope: RawEnvelope, lane: Lane
    ) -> Outcome:
        return await self._attempt(envelope.type, supervisor.logout)

    async def _read(
        self, supervisor: SessionSupervisor, envelope: RawEnvelope, lane: Lane
    ) -> Outcome:
        request = self._parse(MarkRead, envelope)
        if request is None:
            return Outcome.DONE

        async def act() -> None:
            session = await supervisor.open_session(OPEN_WAIT)
            await session.mark_read(request)

        return await self._attempt(envelope.type, act)

    async def _presence(
        self, supervisor: SessionSupervisor, envelope: RawEnvelope, lane: Lane
    ) -> Outcome:
        request = self._parse(Presence, envelope)
        if request is None:
            return Outcome.DONE

        async def act() -> None:
            session = await supervisor.open_session(OPEN_WAIT)
            await session.set_presence(request)

        return await self._attempt(envelope.type, act)
