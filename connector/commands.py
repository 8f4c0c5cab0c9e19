"""Consumes `WA_COMMANDS`, runs each command through the engine, answers with an event, then acks.

The ack comes last: a connector that dies mid-command gets the command redelivered rather than
losing it. Handlers never raise into the loop — a failing command becomes a `message.failed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import ValidationError

from connector.engine import EmitEvent, SendError
from connector.metrics import COMMANDS, SEND_SECONDS
from connector.sessions import Sessions
from schemas.commands import SEND_COMMAND, parse_send
from schemas.envelope import RawEnvelope
from schemas.events import MessageFailed, MessageSent
from schemas.subjects import Topology, parse_subject
from wabus.logs import get_logger

log = get_logger(__name__)

CONSUMER = "connector"
CommandHandler = Callable[[str, RawEnvelope], Awaitable[None]]


def validation_summary(error: ValidationError) -> str:
    """`field: message; …` — short enough for an event, precise enough to fix the request."""
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors()
    )


class CommandConsumer:
    def __init__(
        self, js: JetStreamContext, topology: Topology, sessions: Sessions, emit: EmitEvent
    ) -> None:
        self._js = js
        self._topology = topology
        self._sessions = sessions
        self._emit = emit
        self._handlers: dict[str, CommandHandler] = {SEND_COMMAND: self._send}

    async def run(self, stop: asyncio.Event) -> None:
        subscription = await self._js.pull_subscribe(
            self._topology.all_commands,
            durable=CONSUMER,
            stream=self._topology.commands_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=60.0, max_ack_pending=1024
            ),
        )
        log.info("consuming commands", stream=self._topology.commands_stream)
        try:
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(batch=32, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    continue
                except Exception as error:
                    log.warning("command fetch failed", error=repr(error))
                    await asyncio.sleep(1.0)
                    continue
                for message in messages:
                    await self.handle(message)
        finally:
            # A pull subscription left open makes the connection's drain wait for its timeout.
            await subscription.unsubscribe()

    async def handle(self, message: Msg) -> None:
        try:
            _, instance, command = parse_subject(message.subject)
            envelope = RawEnvelope.model_validate_json(message.data)
        except ValueError as error:
            log.error("unreadable command dropped", subject=message.subject, error=str(error))
            await message.term()
            return
        handler = self._handlers.get(command)
        if handler is None:
            log.error("unknown command dropped", instance=instance, command=command)
            await message.term()
            return
        await handler(instance, envelope)
        COMMANDS.labels(command, "done").inc()
        await message.ack()

    async def _send(self, instance: str, envelope: RawEnvelope) -> None:
        command_id = envelope.id
        try:
            request = parse_send(envelope.data)
        except ValidationError as error:
            await self._fail(
                instance, command_id, None, "invalid_command", validation_summary(error)
            )
            return
        started = time.perf_counter()
        try:
            session = await self._sessions.get(instance)
            sent = await session.send(request)
        except SendError as error:
            await self._fail(
                instance, command_id, request.to, error.code, error.reason, error.retryable
            )
            return
        except Exception as error:
            log.exception("engine send crashed", instance=instance, command_id=command_id)
            await self._fail(instance, command_id, request.to, "engine_error", type(error).__name__)
            return
        SEND_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "message sent", instance=instance, command_id=command_id, message_id=sent.message_id
        )
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

    async def _fail(
        self,
        instance: str,
        command_id: str,
        to: str | None,
        code: str,
        reason: str,
        retryable: bool = False,
    ) -> None:
        log.warning("command failed", instance=instance, command_id=command_id, code=code)
        COMMANDS.labels(SEND_COMMAND, code).inc()
        failed = MessageFailed(
            command_id=command_id, to=to, code=code, reason=reason, retryable=retryable
        )
        await self._emit(instance, failed, source_id=command_id)
