"""Consumes `WA_COMMANDS` and runs each command through its instance's session, then acks.

Commands are dispatched to one *lane* per instance: a queue and a worker that runs that instance's
commands in order, paced, without holding up any other instance. The ack comes last, after the
outcome is recorded and published: a connector that dies mid-command gets the command redelivered
rather than losing it, and the sends bucket keeps a redelivered send from going out twice.
Queued commands are kept alive with `in_progress()` so a long pacing queue is not redelivered.

Every command is checked first (`connector.admission`): one that can never be carried out (an id
NATS cannot store, a body that is not a command, an envelope that contradicts its subject) is
answered `message.failed` (`invalid_command`) and acked at once. Everything else is retried only
up to a bound: the consumer's `max_deliver`, and on the last delivery a command that still cannot
be carried out is answered `message.failed` (`redelivery_exhausted`, saying why) and acked. So no
command is redelivered forever, and no flood of bad commands holds the ack-pending window that
every instance shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import cast

import structlog
from nats.aio.msg import Msg
from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import BadRequestError, InvalidKeyError

from connector.admission import INVALID_COMMAND, Admitted, Refused, admit
from connector.engine import EmitEvent, EngineSession, SendError
from connector.instances import InstanceManager
from connector.metrics import COMMANDS, ERRORS, SEND_SECONDS
from connector.pacing import Pacing, send_delay
from connector.sends import OUTCOME_UNKNOWN, SendLedger
from connector.supervisor import NotConnected, SessionSupervisor
from connector.waiting import first_event, unless_stopped
from schemas.commands import (
    COMMAND_MODELS,
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
)
from schemas.events import MessageFailed, MessageSent
from schemas.instances import SendRecord, SendState
from schemas.subjects import Topology
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

CONSUMER = "connector"
MAX_ACK_PENDING = 1024
DEFAULT_MAX_DELIVER = 20
FINISH_TIMEOUT = 10.0
"""Seconds a shutdown waits for commands already running."""
OPEN_WAIT = 20.0
"""How long a command waits for its session to (re)open before it is handed back to the stream."""
RETRY_DELAY_MAX = 10.0
"""Longest delay of a hand-back that grows with the delivery count (crashes, leases)."""
REDELIVERY_EXHAUSTED = "redelivery_exhausted"
NEVER_PROCESSABLE = (InvalidKeyError, BadSubjectError, BadHeaderError, MaxPayloadError)
"""NATS refused a name or a size this command brings with it: no later delivery can do better.
(Checked before `UNAVAILABLE`, whose base class they share.)"""


class Outcome(Enum):
    DONE = "done"
    LATER = "later"
    """Not carried out yet (session still coming up): nak, redelivered after a delay."""


Handler = Callable[[SessionSupervisor, Admitted, "Lane"], Awaitable[Outcome]]


def command_label(command: str | None) -> str:
    """The command as a metrics label: names come from subjects anyone can publish on, so only
    the known ones are kept (a label per made-up name would grow without bound)."""
    return command if command in COMMAND_MODELS else "unknown"


@dataclass
class Job:
    """A fetched command and the verdict of its admission."""

    message: Msg
    verdict: Admitted | Refused


@dataclass
class Lane:
    """One instance's command queue, its worker, and its pacing clock."""

    queue: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    waiting: dict[int, Job] = field(default_factory=dict)
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
        max_deliver: int = DEFAULT_MAX_DELIVER,
    ) -> None:
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._bound = max_deliver
        """The delivery that is the last: ours, or the consumer's when it has a lower one."""
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

    def _consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=CONSUMER,
            durable_name=CONSUMER,
            filter_subject=self._topology.all_commands,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=MAX_ACK_PENDING,
            max_deliver=self._max_deliver,
        )

    async def _configure_consumer(self) -> None:
        """Create the durable consumer, or bring an existing one to this configuration: a
        consumer created by an older connector has no `max_deliver`, and without it a command
        that keeps failing would be redelivered for as long as the stream keeps it."""
        stream = self._topology.commands_stream
        try:
            info = await self._js.add_consumer(stream, self._consumer_config())
        except BadRequestError as error:
            # e.g. made by hand with settings that cannot be edited: bind to it as it is
            log.warning("command consumer left as it is", error=repr(error))
            info = await self._js.consumer_info(stream, CONSUMER)
        theirs = info.config.max_deliver or -1
        self._bound = min(self._max_deliver, theirs) if theirs > 0 else self._max_deliver
        if theirs != self._max_deliver:
            log.warning(
                "command consumer has another delivery bound",
                configured=self._max_deliver,
                consumer=theirs,
                used=self._bound,
            )

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        await self._configure_consumer()
        subscription = await self._js.pull_subscribe(
            self._topology.all_commands,
            durable=CONSUMER,
            stream=self._topology.commands_stream,
            config=self._consumer_config(),
        )
        log.info(
            "consuming commands",
            stream=self._topology.commands_stream,
            max_deliver=self._bound,
        )
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
            try:
                await subscription.unsubscribe()
            except Exception as error:  # closing anyway: say what was not cleaned up
                log.info("command subscription not unsubscribed", error=repr(error))

    async def dispatch(self, message: Msg) -> None:
        """Queue a command on its instance's lane, or refuse it at once when it names no
        instance to answer on."""
        try:
            verdict = admit(message.subject, message.data, message.headers)
        except Exception as error:
            # a check that cannot even run on this message will not run on its redelivery
            log.exception("command admission crashed", subject=message.subject[:200])
            verdict = Refused(f"body: could not be checked ({type(error).__name__})")
        instance = verdict.instance
        if instance is None:
            assert isinstance(verdict, Refused)  # an admitted command always has its instance
            ERRORS.labels(INVALID_COMMAND).inc()
            COMMANDS.labels(command_label(verdict.command), INVALID_COMMAND).inc()
            log.warning(
                "invalid command dropped: no instance to answer on",
                subject=message.subject[:200],
                command_id=verdict.command_id,
                reason=verdict.reason,
            )
            await self._settle(message, "ack")
            return
        lane = self._lanes.get(instance)
        if lane is None:
            lane = self._lanes[instance] = Lane()
            lane.worker = asyncio.create_task(self._work(instance, lane), name=f"lane:{instance}")
        sequence = message.metadata.sequence.stream
        queued = lane.waiting.get(sequence)
        if queued is not None:
            # redelivered while still queued here: the queued job answers, with this delivery
            # (its count is the one JetStream holds against the bound)
            queued.message = message
            return
        job = Job(message, verdict)
        lane.waiting[sequence] = job
        lane.queue.put_nowait(job)

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        """Tell JetStream that queued commands are being worked on, so they are not redelivered
        while they wait for their turn."""
        while not stop.is_set():
            await first_event(stop, within=self._ack_wait / 3)
            for lane in list(self._lanes.values()):
                for job in list(lane.waiting.values()):
                    try:
                        await job.message.in_progress()
                    except UNAVAILABLE as error:
                        log.debug("in_progress not sent", error=type(error).__name__)

    async def _work(self, instance: str, lane: Lane) -> None:
        structlog.contextvars.bind_contextvars(instance=instance)
        while not self._stopping:
            job = await lane.queue.get()
            if self._stopping:
                return
            lane.busy = True
            try:
                await self._run(instance, lane, job)
            except Exception:
                # _run answers every failure; this is a failure of that answer itself
                ERRORS.labels("command_crashed").inc()
                log.exception("answering a failed command failed; it will be redelivered")
            finally:
                lane.busy = False
                lane.waiting.pop(job.message.metadata.sequence.stream, None)
            if lane.queue.empty() and self._stray(instance) and self._lanes.get(instance) is lane:
                # an instance that does not exist keeps no lane: made-up names cost nothing
                del self._lanes[instance]
                return

    def _stray(self, instance: str) -> bool:
        return self._instances.get(instance) is None and not self._instances.exists(instance)

    def _last(self, message: Msg) -> bool:
        """This delivery is the last one JetStream makes (or more, if the bound was lowered)."""
        return message.metadata.num_delivered >= self._bound

    def _retry_delay(self, message: Msg) -> float:
        """A hand-back delay that grows with the deliveries so far: 1 s, 2 s, … up to 10 s."""
        return min(float(message.metadata.num_delivered), RETRY_DELAY_MAX)

    async def _run(self, instance: str, lane: Lane, job: Job) -> None:
        """Handle one command and sort out how it failed, if it did: for good (answered now),
        for now (redelivered), or for the last time (answered `redelivery_exhausted`)."""
        message = job.message
        try:
            await self.handle(instance, lane, job)
        except NEVER_PROCESSABLE as error:
            log.error(
                "NATS refused a name or size this command brings; it is answered, not retried",
                error=repr(error),
            )
            await self._answer_terminal(
                instance, job, INVALID_COMMAND,
                f"NATS refused it ({type(error).__name__}): it can never be processed",
                record=False,
            )  # fmt: skip
        except UNAVAILABLE as error:
            ERRORS.labels("command_nats_unavailable").inc()
            if self._last(message):
                await self._exhausted(
                    instance, job, f"NATS was unavailable ({type(error).__name__})"
                )
                return
            log.warning("NATS unavailable mid-command; it will be redelivered", error=repr(error))
        except Exception as error:
            ERRORS.labels("command_crashed").inc()
            log.exception(
                "command handling crashed",
                delivery=message.metadata.num_delivered,
                of=self._bound,
            )
            if self._last(message):
                await self._exhausted(
                    instance, job, f"handling it failed on every delivery ({type(error).__name__})"
                )
                return
            await self._settle(message, "nak", self._retry_delay(message))

    async def _settle(self, message: Msg, how: str, delay: float | None = None) -> None:
        """Ack or nak; a NATS outage here only means the command comes back (and is answered
        again from its record), so it is logged, not raised."""
        try:
            if how == "ack":
                await message.ack()
            else:
                await message.nak(delay=delay)
        except UNAVAILABLE as error:
            log.warning(f"{how} lost; the command will be redelivered", error=type(error).__name__)

    # -- executing ------------------------------------------------------------------------

    async def handle(self, instance: str, lane: Lane, job: Job) -> None:
        message, verdict = job.message, job.verdict
        if isinstance(verdict, Refused):
            await self._answer_refused(instance, verdict)
            await self._settle(message, "ack")
            return
        command = verdict.command
        handler = self._handlers[command]
        supervisor = self._instances.get(instance)
        if supervisor is None and self._instances.held_elsewhere(instance):
            if self._last(message):
                await self._exhausted(
                    instance, job, "no connector took up the instance's lease in time"
                )
                return
            # another connector holds it (leases): let it take it
            await self._settle(message, "nak", self._retry_delay(message))
            return
        if supervisor is None:
            if self._instances.exists(instance):
                code, reason = "instance_not_connected", "the instance is stopped or not running"
            else:
                code, reason = "unknown_instance", "no such instance"
            await self._answer_terminal(instance, job, code, reason)
            return
        outcome = await handler(supervisor, verdict, lane)
        if outcome is Outcome.LATER:
            if self._last(message):
                await self._exhausted(
                    instance, job, f"the instance's session did not open within {OPEN_WAIT:g} s"
                )
                return
            await self._settle(message, "nak", 2.0)
            return
        COMMANDS.labels(command, "done").inc()
        await self._settle(message, "ack")

    async def _answer_refused(self, instance: str, refused: Refused) -> None:
        """`message.failed` (`invalid_command`) for a command that can never be carried out; a
        send record too when its id can key one. No answer without an id to name."""
        ERRORS.labels(INVALID_COMMAND).inc()
        COMMANDS.labels(command_label(refused.command), INVALID_COMMAND).inc()
        log.warning(
            "invalid command refused",
            command=(refused.command or "")[:64],
            command_id=refused.command_id,
            reason=refused.reason,
        )
        if refused.command_id is None:
            return
        if refused.recordable and not await self._ledger.settle_failed(
            instance, refused.command_id, INVALID_COMMAND, refused.reason
        ):
            return
        failed = MessageFailed(
            command_id=refused.command_id, to=refused.to, code=INVALID_COMMAND,
            reason=refused.reason,
        )  # fmt: skip
        await self._emit(instance, failed, source_id=refused.command_id)

    async def _exhausted(self, instance: str, job: Job, why: str) -> None:
        """The last delivery, and the command still cannot be carried out: answer for good."""
        deliveries = job.message.metadata.num_delivered
        reason = f"not carried out after {deliveries} deliveries (the bound of redeliveries): {why}"
        await self._answer_terminal(instance, job, REDELIVERY_EXHAUSTED, reason, retryable=True)

    async def _answer_terminal(
        self,
        instance: str,
        job: Job,
        code: str,
        reason: str,
        *,
        retryable: bool = False,
        record: bool = True,
    ) -> None:
        """Answer a command that will not be carried out (`message.failed`), then ack it.
        `record`: also settle its send record (not when NATS refused the record's key)."""
        verdict = job.verdict
        command_id = verdict.command_id
        ERRORS.labels(code).inc()
        COMMANDS.labels(command_label(verdict.command), code).inc()
        log.warning("command not carried out", command_id=command_id, code=code, reason=reason)
        answer = command_id is not None
        if answer and record and verdict.command == SEND_COMMAND and isinstance(verdict, Admitted):
            key = (instance, verdict.command_id)
            try:
                answer = await self._ledger.settle_failed(
                    instance, verdict.command_id, code, reason, ours=key in self._unsent_claims
                )
            except UNAVAILABLE as error:
                # giving up must not wait for NATS: the event is spooled, the record is not
                log.warning("send record of a failed command not written", error=repr(error))
            self._unsent_claims.discard(key)
        if answer and command_id is not None:
            failed = MessageFailed(
                command_id=command_id, to=verdict.to, code=code, reason=reason,
                retryable=retryable,
            )  # fmt: skip
            await self._emit(instance, failed, source_id=command_id)
        await self._settle(job.message, "ack")

    async def _send(self, supervisor: SessionSupervisor, admitted: Admitted, lane: Lane) -> Outcome:
        instance, command_id = supervisor.instance, admitted.command_id
        request = cast(SendMessage, admitted.request)
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
            try:
                await session.set_presence(Presence(chat=request.to, state="composing"))
            except Exception as error:  # "typing…" is a courtesy: the send goes on without it
                log.info("typing indicator not shown", error=repr(error))
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
        self, supervisor: SessionSupervisor, admitted: Admitted, lane: Lane
    ) -> Outcome:
        request = cast(PairPhone, admitted.request)
        return await self._attempt(admitted.command, lambda: supervisor.pair_phone(request.phone))

    async def _logout(
        self, supervisor: SessionSupervisor, admitted: Admitted, lane: Lane
    ) -> Outcome:
        return await self._attempt(admitted.command, supervisor.logout)

    async def _read(self, supervisor: SessionSupervisor, admitted: Admitted, lane: Lane) -> Outcome:
        request = cast(MarkRead, admitted.request)

        async def act() -> None:
            session = await supervisor.open_session(OPEN_WAIT)
            await session.mark_read(request)

        return await self._attempt(admitted.command, act)

    async def _presence(
        self, supervisor: SessionSupervisor, admitted: Admitted, lane: Lane
    ) -> Outcome:
        request = cast(Presence, admitted.request)

        async def act() -> None:
            session = await supervisor.open_session(OPEN_WAIT)
            await session.set_presence(request)

        return await self._attempt(admitted.command, act)
