"""The send decision: what to do next with a `send` command, as a pure function of what is known.

A send is carried out in steps, each one I/O the send executor (`connector.send`) performs: read
the command's record in the sends bucket, wait for the session, pace and record `sending`, hand
the message to the engine, store the outcome and answer. After each step the executor adds what
it learnt to `SendFacts` and asks `decide` for the next step or the final answer. No NATS, engine
or clock here (`now` is passed in), so every rule of idempotent sends is tested from a table
(tests/unit/test_send_decision.py):

- a record `sent` or `failed` (a redelivery, or the same command id published again) is answered
  again with the same event, never sent again;
- a record `sending` is the crash window (docs/connector.md): it may or may not have gone out, so
  it is answered `outcome_unknown` and never sent twice, unless this process knows the record
  is its own and nothing was sent (`ours`);
- what cannot be done yet is handed back to the stream, or given up on the last delivery
  (`connector.redelivery`);
- the engine's answer becomes the record and the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from connector.engine import SendError, SentMessage
from connector.redelivery import (
    LATER_DELAY,
    SESSION_NOT_OPEN,
    Delivery,
    GiveUp,
    HandBack,
    later,
)
from schemas.events import MessageFailed, MessageSent
from schemas.instances import SendRecord, SendState

OUTCOME_UNKNOWN = "outcome_unknown"
OUTCOME_UNKNOWN_REASON = (
    "the connector stopped while this message was being sent; it may or may not have been "
    "delivered, and it is not sent again"
)
INSTANCE_NOT_CONNECTED = "instance_not_connected"
ENGINE_ERROR = "engine_error"
CLAIM_TAKEN = "another delivery of it was being sent at the same time"
CLAIM_NOT_STORED = "NATS did not store its `sending` record"


# -- what the executor learnt ---------------------------------------------------------------


class Opening(Enum):
    """How waiting for the instance's session ended, when it did not end in `SessionDown`."""

    OPEN = "open"
    NOT_YET = "not_yet"
    """Still (re)connecting after `OPEN_WAIT`."""


@dataclass(frozen=True)
class SessionDown:
    """The session is down for good (logged out, failed, stopped): no send can go out."""

    reason: str


class Claiming(Enum):
    """What became of recording `sending` (a KV create) before the engine is called."""

    CLAIMED = "claimed"
    TAKEN = "taken"
    """A record appeared meanwhile: another delivery of the command is being sent right now."""
    NOT_STORED = "not_stored"
    """NATS did not answer; the write may still land (nats-py flushes buffered writes on
    reconnect), but this process knows it sent nothing."""


@dataclass(frozen=True)
class EngineCrashed:
    """The engine raised something other than `SendError`; `error` is the exception's type."""

    error: str


EngineAnswer = SentMessage | SendError | EngineCrashed


@dataclass(frozen=True)
class SendFacts:
    """Everything known about one delivery of a send command so far; the step fields stay None
    until the executor has performed that step."""

    instance: str
    command_id: str
    to: str
    delivery: Delivery
    record: SendRecord | None
    """The command's record in the sends bucket when the delivery was taken up."""
    ours: bool = False
    """This process wrote (or tried to write) the `sending` record and sent nothing: the record
    is no sign of the crash window."""
    session: Opening | SessionDown | None = None
    claim: Claiming | None = None
    engine: EngineAnswer | None = None


# -- what to do next ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenSession:
    """Wait (up to `OPEN_WAIT`) for the instance's session to be open."""


@dataclass(frozen=True)
class Claim:
    """Pace, then record `sending`. Pacing comes first so that the crash window (`sending`
    recorded, outcome not) is no longer than the engine call itself."""

    retake: bool = False
    """Overwrite the record rather than create it: it is ours, and nothing was sent."""


@dataclass(frozen=True)
class CallEngine:
    """Hand the message to WhatsApp."""


@dataclass(frozen=True)
class AlreadyDone:
    """The send was finished by an earlier delivery: its answer again (same event id, so
    JetStream and webhook receivers deduplicate it); nothing is written, nothing sent."""

    event: MessageSent | MessageFailed


@dataclass(frozen=True)
class Sent:
    """WhatsApp accepted it: store the record `sent`, then answer `message.sent`."""

    record: SendRecord
    event: MessageSent


@dataclass(frozen=True)
class Failed:
    """It cannot be sent: store the record `failed`, then answer `message.failed`."""

    record: SendRecord
    event: MessageFailed


@dataclass(frozen=True)
class OutcomeUnknown:
    """Found `sending`: the crash window. Stored `failed`/`outcome_unknown` and answered so; at
    most once, never twice (a duplicate to a customer cannot be taken back)."""

    record: SendRecord
    event: MessageFailed


Step = OpenSession | Claim | CallEngine
Final = AlreadyDone | Sent | Failed | OutcomeUnknown | HandBack | GiveUp
SendDecision = Step | Final


def decide(facts: SendFacts, now: datetime) -> SendDecision:
    """The next step of a send, or its final answer; `now` stamps the records written here."""
    if facts.session is None:
        return _from_record(facts, now)
    if isinstance(facts.session, SessionDown):
        return _failed(facts, INSTANCE_NOT_CONNECTED, facts.session.reason, now)
    if facts.session is Opening.NOT_YET:
        return later(facts.delivery, LATER_DELAY, SESSION_NOT_OPEN)
    if facts.claim is None:
        return Claim(retake=facts.ours)
    if facts.claim is Claiming.TAKEN:
        return later(facts.delivery, LATER_DELAY, CLAIM_TAKEN)
    if facts.claim is Claiming.NOT_STORED:
        return later(facts.delivery, LATER_DELAY, CLAIM_NOT_STORED)
    answer = facts.engine
    if answer is None:
        return CallEngine()
    if isinstance(answer, SendError):
        return _failed(facts, answer.code, answer.reason, now, retryable=answer.retryable)
    if isinstance(answer, EngineCrashed):
        return _failed(facts, ENGINE_ERROR, answer.error, now)
    return _sent(facts, answer)


def _from_record(facts: SendFacts, now: datetime) -> SendDecision:
    record = facts.record
    if record is None or (facts.ours and record.state is SendState.SENDING):
        return OpenSession()
    if record.state is SendState.SENT and record.message_id:
        return AlreadyDone(
            MessageSent(
                command_id=facts.command_id,
                message_id=record.message_id,
                to=facts.to,
                chat=record.chat or facts.to,
                timestamp=record.updated_at,
            )
        )
    if record.state is SendState.FAILED:
        return AlreadyDone(
            MessageFailed(
                command_id=facts.command_id,
                to=facts.to,
                code=record.error_code or "failed",
                reason=record.error or "failed",
            )
        )
    # `sending` (or a record no connector writes, e.g. `sent` without a message id): the
    # connector stopped between handing the message over and recording the answer.
    failed = _failed(facts, OUTCOME_UNKNOWN, OUTCOME_UNKNOWN_REASON, now)
    return OutcomeUnknown(failed.record, failed.event)


def _failed(
    facts: SendFacts, code: str, reason: str, now: datetime, *, retryable: bool = False
) -> Failed:
    record = SendRecord(
        command_id=facts.command_id,
        instance=facts.instance,
        state=SendState.FAILED,
        error_code=code,
        error=reason,
        updated_at=now,
    )
    event = MessageFailed(
        command_id=facts.command_id, to=facts.to, code=code, reason=reason, retryable=retryable
    )
    return Failed(record, event)


def _sent(facts: SendFacts, sent: SentMessage) -> Sent:
    """`updated_at` is WhatsApp's timestamp, so an answer from the record is the same event."""
    record = SendRecord(
        command_id=facts.command_id,
        instance=facts.instance,
        state=SendState.SENT,
        message_id=sent.message_id,
        chat=sent.chat,
        updated_at=sent.timestamp,
    )
    event = MessageSent(
        command_id=facts.command_id,
        message_id=sent.message_id,
        to=facts.to,
        chat=sent.chat,
        timestamp=sent.timestamp,
    )
    return Sent(record, event)
