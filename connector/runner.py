"""Runs one command in its lane, from its admission verdict to its ack.

A refused command is answered `invalid_command`; a command for an instance this connector does
not run is answered (`unknown_instance`, `instance_not_connected`) or, when another connector
holds the instance's lease, handed back for it. Everything else goes to its handler. Whatever
fails is sorted by how: for good (answered now), for now (handed back), or for the last time
(answered `redelivery_exhausted`) — the choice between the last two is `connector.redelivery`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nats.aio.msg import Msg
from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError
from nats.js.errors import InvalidKeyError

from connector.admission import INVALID_COMMAND, Refused
from connector.answers import Answers, ack, nak
from connector.handlers import Handler
from connector.instances import InstanceManager
from connector.lanes import Job, Lane
from connector.metrics import COMMANDS, ERRORS
from connector.redelivery import (
    Delivery,
    Done,
    GiveUp,
    HandBack,
    Settlement,
    growing_delay,
    later,
)
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

NEVER_PROCESSABLE = (InvalidKeyError, BadSubjectError, BadHeaderError, MaxPayloadError)
"""NATS refused a name or a size this command brings with it: no later delivery can do better.
(Checked before `UNAVAILABLE`, whose base class they share.)"""
LEASE_NOT_TAKEN = "no connector took up the instance's lease in time"


class CommandRunner:
    """Handles each command a lane hands it, and settles it with JetStream."""

    def __init__(
        self,
        instances: InstanceManager,
        answers: Answers,
        handlers: Mapping[str, Handler],
        bound: Callable[[], int],
    ) -> None:
        self._instances = instances
        self._answers = answers
        self._handlers = handlers
        self._bound = bound
        """The delivery that is the last (it is known once the consumer is bound)."""

    def delivery(self, message: Msg) -> Delivery:
        """Which delivery `message` is, against the bound the consumer was bound with."""
        return Delivery(message.metadata.num_delivered, self._bound())

    def stray(self, instance: str) -> bool:
        """Neither running here nor configured: nothing of it is worth a lane."""
        return self._instances.get(instance) is None and not self._instances.exists(instance)

    async def run(self, instance: str, lane: Lane, job: Job) -> None:
        """Handle one command and sort out how it failed, if it did."""
        message = job.message  # the delivery taken up; a redelivery meanwhile replaces job's
        try:
            await self.handle(instance, lane, job)
        except NEVER_PROCESSABLE as error:
            log.error(
                "NATS refused a name or size this command brings; it is answered, not retried",
                error=repr(error),
            )
            await self._answers.terminal(
                instance, job, INVALID_COMMAND,
                f"NATS refused it ({type(error).__name__}): it can never be processed",
                record=False,
            )  # fmt: skip
        except UNAVAILABLE as error:
            ERRORS.labels("command_nats_unavailable").inc()
            why = f"NATS was unavailable ({type(error).__name__})"
            settlement = later(self.delivery(message), None, why)
            if isinstance(settlement, HandBack):
                log.warning(
                    "NATS unavailable mid-command; it will be redelivered", error=repr(error)
                )
            await self._settle(instance, job, message, settlement)
        except Exception as error:
            ERRORS.labels("command_crashed").inc()
            delivery = self.delivery(message)
            log.exception("command handling crashed", delivery=delivery.number, of=delivery.bound)
            why = f"handling it failed on every delivery ({type(error).__name__})"
            settlement = later(delivery, growing_delay(delivery), why)
            await self._settle(instance, job, message, settlement)

    async def handle(self, instance: str, lane: Lane, job: Job) -> None:
        """Answer, hand off or carry out the command, and settle it; raises what it cannot sort."""
        message, verdict = job.message, job.verdict
        if isinstance(verdict, Refused):
            await self._answers.refused(instance, verdict)
            await ack(message)
            return
        delivery = self.delivery(message)
        supervisor = self._instances.get(instance)
        settlement: Settlement
        if supervisor is None and self._instances.held_elsewhere(instance):
            # another connector holds it (leases): let it take it
            settlement = later(delivery, growing_delay(delivery), LEASE_NOT_TAKEN)
        elif supervisor is None:
            if self._instances.exists(instance):
                code, reason = "instance_not_connected", "the instance is stopped or not running"
            else:
                code, reason = "unknown_instance", "no such instance"
            await self._answers.terminal(instance, job, code, reason)
            return
        else:
            handler = self._handlers[verdict.command]
            settlement = await handler(supervisor, verdict, lane, delivery)
        if isinstance(settlement, Done):
            COMMANDS.labels(verdict.command, "done").inc()
        await self._settle(instance, job, message, settlement)

    async def _settle(self, instance: str, job: Job, message: Msg, settlement: Settlement) -> None:
        """Ack or hand back `message`, the delivery taken up; a command given up is answered
        and acked on its latest delivery."""
        if isinstance(settlement, Done):
            await ack(message)
        elif isinstance(settlement, GiveUp):
            delivery = self.delivery(job.message)
            await self._answers.exhausted(instance, job, delivery, settlement.why)
        elif settlement.delay is not None:
            await nak(message, settlement.delay)
