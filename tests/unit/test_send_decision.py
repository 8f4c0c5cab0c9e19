"""The send decision, from a table: no NATS, no engine, no clock."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.engine import SendError, SentMessage
from connector.redelivery import LATER_DELAY, SESSION_NOT_OPEN, Delivery, GiveUp, HandBack
from connector.send import STEPS
from connector.send_decision import (
    CLAIM_NOT_STORED,
    CLAIM_TAKEN,
    ENGINE_ERROR,
    INSTANCE_NOT_CONNECTED,
    OUTCOME_UNKNOWN,
    OUTCOME_UNKNOWN_REASON,
    AlreadyDone,
    CallEngine,
    Claim,
    Claiming,
    EngineCrashed,
    Failed,
    Opening,
    OpenSession,
    OutcomeUnknown,
    SendDecision,
    SendFacts,
    Sent,
    SessionDown,
    decide,
)
from schemas.events import MessageFailed, MessageSent
from schemas.instances import SendRecord, SendState

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=3)
"""When an earlier delivery wrote the record found."""
WHATSAPP_AT = NOW - timedelta(seconds=1)
TO = "5511999999999"
CHAT = "5511999999999@s.whatsapp.net"
FIRST, SECOND, LAST = Delivery(1, 20), Delivery(2, 20), Delivery(20, 20)
BEYOND = Delivery(25, 20)
"""Delivered more often than the bound: the bound was lowered since."""
ACCEPTED = SentMessage("3EB0AAAA", CHAT, WHATSAPP_AT)
OPEN = {"session": Opening.OPEN}
CLAIMED = {"session": Opening.OPEN, "claim": Claiming.CLAIMED}


def facts(**changes: Any) -> SendFacts:
    return replace(SendFacts("acme", "c-1", TO, FIRST, None), **changes)


def record(state: SendState, **fields: Any) -> SendRecord:
    return SendRecord(command_id="c-1", instance="acme", state=state, updated_at=EARLIER, **fields)


def failed(code: str, reason: str, *, retryable: bool = False) -> Failed:
    stored = SendRecord(
        command_id="c-1", instance="acme", state=SendState.FAILED, error_code=code, error=reason,
        updated_at=NOW,
    )  # fmt: skip
    event = MessageFailed(command_id="c-1", to=TO, code=code, reason=reason, retryable=retryable)
    return Failed(stored, event)


def outcome_unknown() -> OutcomeUnknown:
    answer = failed(OUTCOME_UNKNOWN, OUTCOME_UNKNOWN_REASON)
    return OutcomeUnknown(answer.record, answer.event)


def sent_again(chat: str) -> AlreadyDone:
    return AlreadyDone(
        MessageSent(command_id="c-1", message_id="3EB0AAAA", to=TO, chat=chat, timestamp=EARLIER)
    )


SENT_RECORD = record(SendState.SENT, message_id="3EB0AAAA", chat="1@s.whatsapp.net")
SENDING_RECORD = record(SendState.SENDING)
ROWS: list[tuple[str, SendFacts, SendDecision]] = [
    # -- the record found decides first ------------------------------------------------------
    ("first delivery, no record: wait for the session", facts(), OpenSession()),
    ("last delivery, no record: still tried", facts(delivery=LAST), OpenSession()),
    ("redelivery, record sent: answered again, not resent",
     facts(delivery=SECOND, record=SENT_RECORD), sent_again("1@s.whatsapp.net")),
    ("same id published again (first delivery), record sent: answered again",
     facts(record=SENT_RECORD), sent_again("1@s.whatsapp.net")),
    ("record sent without a chat: the recipient stands in",
     facts(delivery=SECOND, record=record(SendState.SENT, message_id="3EB0AAAA")), sent_again(TO)),
    ("redelivery, record failed: the same failure again",
     facts(delivery=SECOND, record=record(SendState.FAILED, error_code="rate_limited",
                                          error="slow down")),
     AlreadyDone(MessageFailed(command_id="c-1", to=TO, code="rate_limited",
                               reason="slow down"))),
    ("record failed without a code", facts(delivery=SECOND, record=record(SendState.FAILED)),
     AlreadyDone(MessageFailed(command_id="c-1", to=TO, code="failed", reason="failed"))),
    ("redelivery, record sending: the crash window, outcome unknown, never sent twice",
     facts(delivery=SECOND, record=SENDING_RECORD), outcome_unknown()),
    ("record sending on the last delivery: outcome unknown too",
     facts(delivery=LAST, record=SENDING_RECORD), outcome_unknown()),
    ("record sending, ours (its claim unconfirmed, nothing sent): sent after all",
     facts(delivery=SECOND, record=SENDING_RECORD, ours=True), OpenSession()),
    ("ours, record sent meanwhile by another connector: answered from it",
     facts(delivery=SECOND, record=SENT_RECORD, ours=True), sent_again("1@s.whatsapp.net")),
    ("record sent without a message id (no connector writes one): outcome unknown",
     facts(delivery=SECOND, record=record(SendState.SENT)), outcome_unknown()),
    ("record queued (no connector writes one): outcome unknown",
     facts(delivery=SECOND, record=record(SendState.QUEUED)), outcome_unknown()),
    # -- the session ------------------------------------------------------------------------
    ("session open: pace and claim", facts(**OPEN), Claim(retake=False)),
    ("ours, session open: the claim overwrites our own record",
     facts(record=SENDING_RECORD, ours=True, **OPEN), Claim(retake=True)),
    ("ours, no record (the write never landed): the claim overwrites whatever lands",
     facts(ours=True, **OPEN), Claim(retake=True)),
    ("session not open in time: handed back",
     facts(delivery=SECOND, session=Opening.NOT_YET), HandBack(LATER_DELAY, SESSION_NOT_OPEN)),
    ("session not open in time on the last delivery: given up",
     facts(delivery=LAST, session=Opening.NOT_YET), GiveUp(SESSION_NOT_OPEN)),
    ("session not open, delivered beyond a lowered bound: given up",
     facts(delivery=BEYOND, session=Opening.NOT_YET), GiveUp(SESSION_NOT_OPEN)),
    ("session down for good: failed, not connected",
     facts(session=SessionDown("session is logged_out")),
     failed(INSTANCE_NOT_CONNECTED, "session is logged_out")),
    ("session down for good on the last delivery: failed, not exhausted",
     facts(delivery=LAST, session=SessionDown("session is stopped")),
     failed(INSTANCE_NOT_CONNECTED, "session is stopped")),
    # -- the claim --------------------------------------------------------------------------
    ("claimed: hand it to the engine", facts(**CLAIMED), CallEngine()),
    ("claimed on the last delivery: still sent", facts(delivery=LAST, **CLAIMED), CallEngine()),
    ("claim taken by another delivery: handed back",
     facts(session=Opening.OPEN, claim=Claiming.TAKEN), HandBack(LATER_DELAY, CLAIM_TAKEN)),
    ("claim taken on the last delivery: given up",
     facts(delivery=LAST, session=Opening.OPEN, claim=Claiming.TAKEN), GiveUp(CLAIM_TAKEN)),
    ("claim not stored (NATS away): handed back",
     facts(session=Opening.OPEN, claim=Claiming.NOT_STORED),
     HandBack(LATER_DELAY, CLAIM_NOT_STORED)),
    ("claim not stored on the last delivery: given up",
     facts(delivery=LAST, session=Opening.OPEN, claim=Claiming.NOT_STORED),
     GiveUp(CLAIM_NOT_STORED)),
    # -- the engine's answer ----------------------------------------------------------------
    ("engine accepted: record sent, stamped with WhatsApp's time",
     facts(engine=ACCEPTED, **CLAIMED),
     Sent(SendRecord(command_id="c-1", instance="acme", state=SendState.SENT,
                     message_id="3EB0AAAA", chat=CHAT, updated_at=WHATSAPP_AT),
          MessageSent(command_id="c-1", message_id="3EB0AAAA", to=TO, chat=CHAT,
                      timestamp=WHATSAPP_AT))),
    ("engine refused, retryable", facts(engine=SendError("rate_limited", "slow down",
                                                         retryable=True), **CLAIMED),
     failed("rate_limited", "slow down", retryable=True)),
    ("engine refused, not retryable",
     facts(delivery=LAST, engine=SendError("not_on_whatsapp", "no such account"), **CLAIMED),
     failed("not_on_whatsapp", "no such account")),
    ("engine crashed: engine_error, named by the exception's type",
     facts(engine=EngineCrashed("RuntimeError"), **CLAIMED), failed(ENGINE_ERROR, "RuntimeError")),
]  # fmt: skip


@pytest.mark.parametrize(("facts", "expected"), [row[1:] for row in ROWS], ids=[r[0] for r in ROWS])
def test_decide(facts: SendFacts, expected: SendDecision) -> None:
    assert decide(facts, NOW) == expected


def test_the_table_has_a_row_for_every_kind_of_decision() -> None:
    kinds = {type(expected) for _, _, expected in ROWS}
    assert kinds == {
        OpenSession, Claim, CallEngine, AlreadyDone, Sent, Failed, OutcomeUnknown, HandBack,
        GiveUp,
    }  # fmt: skip


def test_a_first_delivery_walks_through_every_step_to_sent() -> None:
    learnt: list[dict[str, Any]] = [
        {"session": Opening.OPEN}, {"claim": Claiming.CLAIMED}, {"engine": ACCEPTED}
    ]  # fmt: skip
    known, steps = facts(), []
    for fact in [*learnt, {}]:
        steps.append(decide(known, NOW))
        known = replace(known, **fact)
    assert [type(step) for step in steps] == [OpenSession, Claim, CallEngine, Sent]
    assert len(steps) == STEPS  # the executor's bound on decisions per delivery


@pytest.mark.parametrize("state", list(SendState))
@pytest.mark.parametrize("delivery", [FIRST, SECOND, LAST])
def test_a_recorded_send_is_never_sent_again(state: SendState, delivery: Delivery) -> None:
    """Whatever the record says and whichever delivery this is, a send found recorded is
    answered, not sent — the one exception being this process's own unconfirmed claim."""
    found = record(state, message_id="3EB0AAAA")
    answered = decide(facts(delivery=delivery, record=found), NOW)
    assert isinstance(answered, AlreadyDone | OutcomeUnknown), answered
    ours = decide(facts(delivery=delivery, record=found, ours=True), NOW)
    if state is SendState.SENDING:  # positive control: the same record, known to be ours
        assert ours == OpenSession()
    else:
        assert ours == answered


def test_now_stamps_only_the_records_written_here() -> None:
    later_now = NOW + timedelta(hours=1)
    crashed = facts(engine=EngineCrashed("RuntimeError"), **CLAIMED)
    first, second = decide(crashed, NOW), decide(crashed, later_now)
    assert isinstance(first, Failed)
    assert isinstance(second, Failed)
    assert (first.record.updated_at, second.record.updated_at) == (NOW, later_now)
    assert decide(crashed, NOW) == first  # the same facts, the same decision
    # a send is stamped with WhatsApp's time, whatever `now` is
    accepted = decide(facts(engine=ACCEPTED, **CLAIMED), later_now)
    assert isinstance(accepted, Sent)
    assert accepted.record.updated_at == WHATSAPP_AT


def _imports_nats(module: str) -> bool:
    code = f"import sys, {module}; print(any(m.split('.')[0] == 'nats' for m in sys.modules))"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    return found == "True"


def test_the_decision_imports_no_nats() -> None:
    assert not _imports_nats("connector.send_decision")
    assert not _imports_nats("connector.redelivery")
    assert _imports_nats("connector.sends")  # positive control: the ledger does
