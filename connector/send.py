"""The `send` handler: performs the I/O of a send, one step at a time, as the send decision says.

`connector.send_decision.decide` says what to do next from what is known; this executor does it
(read the record, wait for the session, pace, record `sending`, call the engine, store the outcome
and answer) and adds what it learnt. Every rule lives in the decision; what is here is only how
each step is performed and what it can raise.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from typing import cast

from connector.admission import Admitted
from connector.answers import UnsentClaims
from connector.engine import EmitEvent, EngineSession, SendError
from connector.lanes import Lane
from connector.metrics import COMMANDS, ERRORS, SEND_SECONDS
from connector.pacing import Pacing, send_delay
from connector.preparation import Preparer
from connector.redelivery import OPEN_WAIT, Delivery, Done, GiveUp, HandBack, Settlement
from connector.send_decision import (
    AlreadyDone,
    CallEngine,
    Claim,
    Claiming,
    EngineAnswer,
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
from connector.sends import SendLedger
from connector.supervisor import NotConnected, SessionSupervisor
from schemas.commands import SEND_COMMAND, Presence, SendMessage, SendText
from schemas.envelope import utc_now
from schemas.events import MessageFailed, MessageSent
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

STEPS = 4
"""Decisions one delivery takes at most: open the session, claim, call the engine, answer."""


class SendExecutor:
    """Carries out `send` commands, at most once each (docs/connector.md, "Idempotency")."""

    def __init__(
        self,
        ledger: SendLedger,
        emit: EmitEvent,
        pacing: Pacing,
        unsent: UnsentClaims,
        rng: random.Random,
        preparer: Preparer,
    ) -> None:
        self._preparer = preparer
        self._ledger = ledger
        self._emit = emit
        self._pacing = pacing
        self._unsent = unsent
        self._rng = rng

    async def __call__(
        self, supervisor: SessionSupervisor, admitted: Admitted, lane: Lane, delivery: Delivery
    ) -> Settlement:
        instance, command_id = supervisor.instance, admitted.command_id
        request = cast(SendMessage, admitted.request)
        key = (instance, command_id)
        facts = SendFacts(
            instance=instance,
            command_id=command_id,
            to=request.to,
            delivery=delivery,
            record=await self._ledger.get(instance, command_id),
            ours=key in self._unsent,
        )
        session: EngineSession | None = None
        for _ in range(STEPS):
            decision = decide(facts, utc_now())
            if isinstance(decision, OpenSession):
                session, opening = await self._open(supervisor)
                facts = replace(facts, session=opening)
            elif isinstance(decision, Claim):
                assert session is not None  # claimed only once the session is open
                await self._pace(lane, session, request)
                facts = replace(facts, claim=await self._claim(key, decision.retake))
            elif isinstance(decision, CallEngine):
                assert session is not None
                account = supervisor.account.jid if supervisor.account else None
                answer = await self._call(session, request, lane, key, account)
                facts = replace(facts, engine=answer)
            else:
                return await self._finish(instance, decision)
        raise AssertionError(f"the send decision took more than {STEPS} steps")

    async def _open(
        self, supervisor: SessionSupervisor
    ) -> tuple[EngineSession | None, Opening | SessionDown]:
        try:
            return await supervisor.open_session(OPEN_WAIT), Opening.OPEN
        except TimeoutError:
            return None, Opening.NOT_YET
        except NotConnected as error:
            return None, SessionDown(str(error))

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

    async def _claim(self, key: tuple[str, str], retake: bool) -> Claiming:
        instance, command_id = key
        try:
            claimed = await self._ledger.claim(instance, command_id, retake=retake)
        except UNAVAILABLE:
            # The `sending` record may still land: remember that this process never sent it,
            # so that its redelivery here is sent rather than answered `outcome_unknown`.
            self._unsent.add(key)
            return Claiming.NOT_STORED
        if not claimed:
            return Claiming.TAKEN
        self._unsent.discard(key)
        return Claiming.CLAIMED

    async def _call(
        self,
        session: EngineSession,
        request: SendMessage,
        lane: Lane,
        key: tuple[str, str],
        account: str | None,
    ) -> EngineAnswer:
        started = time.perf_counter()
        try:
            context = await self._preparer.prepare(key[0], request, session, account)
            sent = await session.send(request, context)
        except SendError as error:
            return error
        except Exception as error:
            log.exception("engine send crashed", command_id=key[1])
            return EngineCrashed(type(error).__name__)
        finally:
            lane.last_sent_at = time.monotonic()
        SEND_SECONDS.observe(time.perf_counter() - started)
        try:
            await self._preparer.remember_sent(key[0], request, sent, context)
        except Exception as error:  # sent all the same: only later quotes or votes lack it
            log.warning("sent message not remembered", command_id=key[1], error=repr(error))
        return sent

    async def _finish(self, instance: str, decision: SendDecision) -> Settlement:
        """Apply a final decision: store the record, then answer (the ack comes after)."""
        event: MessageSent | MessageFailed
        match decision:
            case HandBack() | GiveUp():
                return decision
            case AlreadyDone(event=event):
                if isinstance(event, MessageSent):
                    log.info(
                        "redelivered send already sent, answered again", command_id=event.command_id
                    )
            case Sent(record=record, event=event):
                await self._ledger.put_until_stored(record)
                log.info("message sent", command_id=event.command_id, message_id=event.message_id)
            case Failed(record=record, event=event) | OutcomeUnknown(record=record, event=event):
                if isinstance(decision, OutcomeUnknown):
                    log.warning(
                        "send outcome unknown after a restart, not resending",
                        command_id=event.command_id,
                    )
                log.warning("send failed", command_id=event.command_id, code=event.code)
                ERRORS.labels(event.code).inc()
                COMMANDS.labels(SEND_COMMAND, event.code).inc()
                await self._ledger.put_until_stored(record)
            case _:
                raise AssertionError(f"not a final send decision: {decision!r}")
        await self._emit(instance, event, source_id=event.command_id)
        return Done()
