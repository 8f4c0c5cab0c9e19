"""Consumes `WA_COMMANDS`: binds the durable pull consumer, fetches, and queues each command on
its instance's lane.

Every command is checked first (`connector.admission`): one that can never be carried out is
answered `message.failed` (`invalid_command`) and acked at once. The ack of everything else comes
last, after the outcome is recorded and published: a connector that dies mid-command gets the
command redelivered rather than losing it, and the sends bucket keeps a redelivered send from
going out twice. Redelivery is bounded by the consumer's `max_deliver`; on the last delivery a
command that still cannot be carried out is answered `redelivery_exhausted`. So no command is
redelivered forever, and no flood of bad commands holds the ack-pending window that every
instance shares.

The modules it wires together, one job each: `lanes` (per-instance queues, keep-alive), `runner`
(one command to its ack), `handlers` (the handler table), `send` and `send_decision` (idempotent
sends: the I/O and the pure decision), `redelivery` (hand back or give up, pure), `answers`
(`message.failed` answers, ack and nak).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import BadRequestError

from connector.admission import INVALID_COMMAND, Admitted, Refused, admit
from connector.answers import Answers, UnsentClaims, ack, command_label
from connector.engine import EmitEvent
from connector.handlers import handler_table
from connector.instances import InstanceManager
from connector.lanes import Job, Lanes
from connector.metrics import COMMANDS, ERRORS
from connector.pacing import Pacing
from connector.preparation import Preparer
from connector.runner import CommandRunner
from connector.send import SendExecutor
from connector.sends import SendLedger
from connector.waiting import unless_stopped
from schemas.subjects import Topology
from wabus.logs import get_logger

log = get_logger(__name__)

CONSUMER = "connector"
MAX_ACK_PENDING = 1024
DEFAULT_MAX_DELIVER = 20
FINISH_TIMEOUT = 10.0
"""Seconds a shutdown waits for commands already running."""
FETCH_BATCH = 64
FETCH_FAILURES = 5
"""Fetches failing in a row (other than timeouts) before the subscription is bound again."""


class CommandConsumer:
    """The durable `connector` consumer of the commands stream, and the lanes it feeds."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        instances: InstanceManager,
        emit: EmitEvent,
        ledger: SendLedger,
        pacing: Pacing,
        preparer: Preparer,
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
        jitter = rng or random.Random()  # noqa: S311 - jitter, not security
        unsent: UnsentClaims = set()
        send = SendExecutor(ledger, emit, pacing, unsent, jitter, preparer)
        self._runner = CommandRunner(
            instances, Answers(emit, ledger, unsent), handler_table(send), lambda: self._bound
        )
        self._lanes = Lanes(self._runner.run, self._runner.stray)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch until `stop`. The pull subscription is bound again whenever fetching keeps
        failing (after a server restart it may be gone: nats.py #504)."""
        keeper = asyncio.create_task(self._lanes.keep_alive(stop, self._ack_wait / 3))
        try:
            while not stop.is_set():
                try:
                    await self._fetch_loop(stop)
                except Exception as error:
                    ERRORS.labels("command_fetch").inc()
                    log.warning("command subscription lost, binding again", error=repr(error))
                    with contextlib.suppress(TimeoutError):  # the pause ran out: bind again
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await self._lanes.finish(FINISH_TIMEOUT)
            keeper.cancel()
            workers = self._lanes.cancel()
            await asyncio.gather(keeper, *workers, return_exceptions=True)
            log.info("command consumer stopped")

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
                    fetched = await unless_stopped(
                        subscription.fetch(batch=FETCH_BATCH, timeout=1.0), stop
                    )
                    messages = fetched or []
                except (NatsTimeoutError, TimeoutError):
                    failures = 0
                    continue
                except Exception as error:
                    failures += 1
                    if failures >= FETCH_FAILURES:
                        raise
                    log.warning("command fetch failed", error=repr(error))
                    with contextlib.suppress(TimeoutError):  # the pause ran out: fetch again
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
        verdict = _admit(message)
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
            await ack(message)
            return
        self._lanes.put(instance, Job(message, verdict))


def _admit(message: Msg) -> Admitted | Refused:
    try:
        return admit(message.subject, message.data, message.headers)
    except Exception as error:
        # a check that cannot even run on this message will not run on its redelivery
        log.exception("command admission crashed", subject=message.subject[:200])
        return Refused(f"body: could not be checked ({type(error).__name__})")
