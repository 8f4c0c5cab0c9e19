"""Answering commands that are not carried out, and settling their messages with JetStream.

A command that will not be carried out is answered `message.failed` (with a `failed` send record
when it is a send whose record may say so), then acked. Acks and naks that NATS loses are only
logged: the command comes back, and is answered again from its record.
"""

from __future__ import annotations

from nats.aio.msg import Msg

from connector.admission import INVALID_COMMAND, Admitted, Refused
from connector.engine import EmitEvent
from connector.lanes import Job
from connector.metrics import COMMANDS, ERRORS
from connector.redelivery import REDELIVERY_EXHAUSTED, Delivery, exhausted_reason
from connector.sends import SendLedger
from schemas.commands import COMMAND_MODELS, SEND_COMMAND
from schemas.events import MessageFailed
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

UnsentClaims = set[tuple[str, str]]
"""(instance, command id) of sends whose `sending` record this process tried to write without
learning whether it landed, and that it did not send: such a record is no crash window."""


def command_label(command: str | None) -> str:
    """The command as a metrics label: names come from subjects anyone can publish on, so only
    the known ones are kept (a label per made-up name would grow without bound)."""
    return command if command in COMMAND_MODELS else "unknown"


async def ack(message: Msg) -> None:
    """Done with the command; a lost ack only brings it back, answered again from its record."""
    try:
        await message.ack()
    except UNAVAILABLE as error:
        log.warning("ack lost; the command will be redelivered", error=type(error).__name__)


async def nak(message: Msg, delay: float) -> None:
    """Hand the command back, redelivered after `delay` seconds."""
    try:
        await message.nak(delay=delay)
    except UNAVAILABLE as error:
        log.warning("nak lost; the command will be redelivered", error=type(error).__name__)


class Answers:
    """`message.failed` answers for commands that will not be carried out."""

    def __init__(self, emit: EmitEvent, ledger: SendLedger, unsent: UnsentClaims) -> None:
        self._emit = emit
        self._ledger = ledger
        self._unsent = unsent

    async def refused(self, instance: str, refused: Refused) -> None:
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

    async def exhausted(self, instance: str, job: Job, delivery: Delivery, why: str) -> None:
        """The last delivery, and the command still cannot be carried out: answer for good."""
        reason = exhausted_reason(delivery, why)
        await self.terminal(instance, job, REDELIVERY_EXHAUSTED, reason, retryable=True)

    async def terminal(
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
        `record`: also settle its send record (not when NATS refused the record's key); a record
        that says `sent`, or `sending` by another delivery, is not contradicted, nor answered."""
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
                    instance, verdict.command_id, code, reason, ours=key in self._unsent
                )
            except UNAVAILABLE as error:
                # giving up must not wait for NATS: the event is spooled, the record is not
                log.warning("send record of a failed command not written", error=repr(error))
            self._unsent.discard(key)
        if answer and command_id is not None:
            failed = MessageFailed(
                command_id=command_id, to=verdict.to, code=code, reason=reason,
                retryable=retryable,
            )  # fmt: skip
            await self._emit(instance, failed, source_id=command_id)
        await ack(job.message)
