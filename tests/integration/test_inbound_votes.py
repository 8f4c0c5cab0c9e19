"""A poll vote that arrives while its poll is still being remembered (the poll's event is
published first, remembered in the background) waits for it and decrypts, on a real
nats-server's messages bucket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS

from connector.engine import EncryptedVote
from connector.inbound import Inbound
from connector.memory import MessageMemory
from connector.seen import SeenMessage
from schemas.envelope import EventData
from schemas.events import MessageReceived, PollVote
from tests.unit.test_polls import OPTIONS, POLL_ID, SECRET, sealed
from wabus.settings import Settings

CHAT = "120363000000000001@g.us"


class GatedMemory(MessageMemory):
    """The real memory, whose writes wait for the test to open the gate (a slow bucket)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def remember(self, instance: str, seen: SeenMessage) -> None:
        await self.gate.wait()
        await super().remember(instance, seen)


def poll() -> MessageReceived:
    return MessageReceived.model_validate(
        {
            "message_id": POLL_ID,
            "chat": CHAT,
            "from": "5511988887777@s.whatsapp.net",
            "from_me": False,
            "type": "poll",
            "text": "Drinks?",
            "poll": {"question": "Drinks?", "options": OPTIONS, "selectable_count": 1},
            "timestamp": datetime.now(UTC),
        }
    )


def vote(message_id: str, poll_id: str = POLL_ID) -> EncryptedVote:
    fields = sealed(["Tea"])
    return EncryptedVote(
        message_id=message_id,
        chat=CHAT,
        voter=fields["voter"],
        poll_id=poll_id,
        poll_sender=fields["poll_sender"],
        enc_payload=fields["enc_payload"],
        enc_iv=fields["enc_iv"],
        timestamp=datetime.now(UTC),
    )


async def test_a_vote_right_behind_its_poll_waits_for_it_and_decrypts(
    nc: NATS, settings: Settings
) -> None:
    published: list[EventData] = []

    async def emit(instance: str, data: EventData, source: str | None, media: bytes | None) -> None:
        published.append(data)

    memory = GatedMemory(nc.jetstream(), settings.topology, ttl_seconds=60)
    inbound = Inbound(emit, memory)
    await inbound.event("acme", poll(), poll_secret=SECRET)
    voting = asyncio.create_task(inbound.vote("acme", vote("V1")))
    await asyncio.sleep(0.2)
    assert not voting.done()  # waiting for the poll to be remembered, not giving up on it
    memory.gate.set()
    await asyncio.wait_for(voting, 10)
    [_, first] = published
    assert isinstance(first, PollVote)
    assert first.decrypted is True
    assert first.selected == ["Tea"]

    # a vote for a poll nobody remembers goes out undecrypted, at once (negative control)
    await inbound.vote("acme", vote("V2", poll_id="3EB0FFFFFFFFFFFFFFFFFF"))
    unknown = published[-1]
    assert isinstance(unknown, PollVote)
    assert unknown.decrypted is False
    assert unknown.selected is None
