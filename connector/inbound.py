"""What a session received, on its way out: published as events, remembered, votes decrypted.

Every message is published first and remembered after (`connector.memory`): the event is the
promise, the memory a convenience for later quotes, edits, forwards and votes. A poll vote
arrives encrypted; it is decrypted with the poll's secret and options as remembered, and
published as `poll.vote` — with `decrypted: false` when the poll is unknown or the vote does
not decrypt, so that no vote goes unreported. A vote that comes while its poll is still being
remembered waits for that first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from connector.engine import EncryptedVote
from connector.memory import MessageMemory
from connector.polls import VoteNotDecrypted, decrypt_vote, selected_options
from connector.seen import SeenMessage
from schemas.envelope import EventData
from schemas.events import MessageKind, MessageReceived, PollVote
from wabus.logs import get_logger

log = get_logger(__name__)

MediaEmit = Callable[[str, EventData, str | None, bytes | None], Awaitable[None]]
"""Publishes an event of an instance with its source id and media bytes."""

NOT_REMEMBERED = frozenset({MessageKind.REACTION, MessageKind.EDIT, MessageKind.REVOKE})
"""Messages about other messages: nothing refers back to them."""


def seen_of(received: MessageReceived, raw: bytes | None, poll_secret: bytes | None) -> SeenMessage:
    """What to remember of a received message."""
    return SeenMessage(
        message_id=received.message_id,
        chat=received.chat,
        sender=received.from_,
        from_me=received.from_me,
        timestamp=received.timestamp,
        kind=received.type,
        text=received.text,
        view_once=received.view_once,
        raw=raw,
        poll_options=received.poll.options if received.poll is not None else [],
        poll_secret=poll_secret,
    )


MAX_REMEMBERING = 1000
"""Messages being remembered at once; past it a message goes unremembered (and logged)."""


class Inbound:
    """The connector's side of what sessions report as received."""

    def __init__(self, emit: MediaEmit, memory: MessageMemory | None = None) -> None:
        self._emit = emit
        self._memory = memory
        self._remembering: dict[tuple[str, str], asyncio.Task[None]] = {}
        """Being remembered, by instance and message id: a vote that arrives while its poll is
        still on its way into the memory waits for it instead of going undecrypted."""

    def _remember_soon(self, instance: str, seen: SeenMessage) -> None:
        """Remember in the background: a slow or absent bucket (NATS going away, not noticed
        yet) must not hold up the session's next events, which have the spool to wait in."""
        assert self._memory is not None
        if len(self._remembering) >= MAX_REMEMBERING:
            log.warning("message not remembered: too many pending", message_id=seen.message_id)
            return
        key = (instance, seen.message_id)
        task = asyncio.create_task(self._remember(self._memory, instance, seen))
        self._remembering[key] = task
        task.add_done_callback(lambda done: self._forget_task(key, done))

    def _forget_task(self, key: tuple[str, str], done: asyncio.Task[None]) -> None:
        if self._remembering.get(key) is done:
            del self._remembering[key]

    @staticmethod
    async def _remember(memory: MessageMemory, instance: str, seen: SeenMessage) -> None:
        try:
            await memory.remember(instance, seen)
        except Exception:  # published already: only a later quote or vote lacks it
            log.exception("message not remembered", message_id=seen.message_id)

    async def event(
        self,
        instance: str,
        data: EventData,
        source_id: str | None = None,
        media: bytes | None = None,
        raw: bytes | None = None,
        poll_secret: bytes | None = None,
    ) -> None:
        await self._emit(instance, data, source_id, media)
        if (
            self._memory is not None
            and isinstance(data, MessageReceived)
            and data.type not in NOT_REMEMBERED
        ):
            self._remember_soon(instance, seen_of(data, raw, poll_secret))

    async def vote(self, instance: str, vote: EncryptedVote) -> None:
        poll = None
        if self._memory is not None:
            if (pending := self._remembering.get((instance, vote.poll_id))) is not None:
                await asyncio.wait({pending})  # the poll arrived just before its vote
            poll = await self._memory.recall(instance, vote.poll_id)
        selected: list[str] | None = None
        if poll is None or poll.poll_secret is None:
            log.warning("poll vote not decrypted: the poll is unknown", poll_id=vote.poll_id)
        else:
            try:
                hashes = decrypt_vote(
                    poll.poll_secret,
                    vote.poll_id,
                    vote.poll_sender,
                    vote.voter,
                    vote.enc_payload,
                    vote.enc_iv,
                )
            except VoteNotDecrypted as error:
                log.warning("poll vote not decrypted", poll_id=vote.poll_id, error=str(error))
            else:
                selected = selected_options(poll.poll_options, hashes)
        data = PollVote(
            message_id=vote.message_id,
            poll_id=vote.poll_id,
            chat=vote.chat,
            from_=vote.voter,
            decrypted=selected is not None,
            selected=selected,
            timestamp=vote.timestamp,
        )
        await self._emit(instance, data, vote.message_id, None)
