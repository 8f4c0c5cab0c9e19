"""Every message kind both ways, end to end: signed HTTP sends through `python -m relay`, carried
out by `python -m connector` on the sim engine (which records what it was asked to send, after
the connector prepared it: converted media, link preview, quoted and targeted messages), and
every inbound kind back as a verified webhook. A poll's votes decrypt after the connector was
SIGKILLed and started again: its secret is remembered in the messages bucket, not in memory.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from relay.client import RelayClient, RelayError
from tests import connector_support as cs
from tests.conftest import API_KEY_ID, API_SECRET
from tests.media_samples import image_bytes, wav_tone
from tests.processes import ready, service, stack_env
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port
from wabus.settings import Settings

pytestmark = pytest.mark.e2e

GROUP = "120363040000000001@g.us"
MEMBER = "5511988887777@s.whatsapp.net"
SOMEONE = "5511999999999"


def png(width: int = 800, height: int = 400) -> bytes:
    return image_bytes("PNG", width, height)


def jpeg(width: int = 600, height: int = 300) -> bytes:
    return image_bytes("JPEG", width, height)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Stack:
    receiver: Receiver
    relay_url: str
    site_url: str
    env: dict[str, str]
    tmp_path: Path

    @contextmanager
    def connector(self) -> Iterator[Any]:
        port = free_port()
        with service(
            "connector", self.env | {"PORT": str(port)}, self.tmp_path / "connector.log"
        ) as process:
            yield process, f"http://127.0.0.1:{port}"


def site() -> Starlette:
    """A page with OpenGraph tags and an image, for link previews fetched by the connector."""

    async def page(request: Request) -> Response:
        image = f"{request.base_url}og.jpg"
        return HTMLResponse(
            "<html><head><title>fallback</title>"
            '<meta property="og:title" content="The wabus page">'
            '<meta property="og:description" content="Nothing lost, nothing twice.">'
            f'<meta property="og:image" content="{image}"></head><body>hi</body></html>'
        )

    async def image(request: Request) -> Response:
        return Response(jpeg(), media_type="image/jpeg")

    return Starlette(routes=[Route("/page", page), Route("/og.jpg", image)])


@pytest.fixture
async def stack(
    settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    receiver = Receiver(webhook_secret)
    async with running(receiver.app()) as receiver_url, running(site()) as site_url:
        relay_port = free_port()
        env = stack_env(
            settings,
            receiver_url,
            webhook_secret,
            WABUS_ENGINE="sim",
            WABUS_DATA_DIR=str(tmp_path / "data"),
            WABUS_SEND_INTERVAL="0",
        )
        relay_log = tmp_path / "relay.log"
        with service("relay", env | {"PORT": str(relay_port)}, relay_log):
            relay_url = f"http://127.0.0.1:{relay_port}"
            try:
                await eventually(lambda: ready(relay_url), timeout=30)
                yield Stack(receiver, relay_url, site_url, env, tmp_path)
            finally:
                for name in ("connector", "relay"):
                    path = tmp_path / f"{name}.log"
                    if path.exists():
                        print(f"--- {name} log ---\n" + path.read_text())


async def play(nc: NATS, settings: Settings, inbound: dict[str, Any]) -> None:
    answer = await nc.request(
        settings.topology.sim("acme", "inbound"), json.dumps(inbound).encode(), timeout=5
    )
    assert json.loads(answer.data) == {"ok": True}


async def sent_record(nc: NATS, settings: Settings, message_id: str) -> dict[str, Any]:
    """What the sim network was asked to send as `message_id`."""
    sent = (await cs.sim(nc, settings.topology, "acme", "sent"))["sent"]
    found: list[dict[str, Any]] = [entry for entry in sent if entry["message_id"] == message_id]
    assert len(found) == 1, f"message {message_id} sent {len(found)} times"
    return found[0]


def message_numbered(message_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["data"].get("message_id") == message_id


async def session_open_here(nc: NATS, settings: Settings) -> bool:
    """The running connector's session of the instance is open (a status read could still be
    the killed connector's): the sim engine of this process says so."""
    try:
        answer = await cs.sim(nc, settings.topology, "acme", "activity")
    except (NoRespondersError, TimeoutError):
        return False
    return bool(answer.get("ok")) and bool(answer.get("open"))


async def send(client: RelayClient, message: dict[str, Any]) -> dict[str, Any]:
    answer = await client.send("acme", message, wait=20)
    return answer


async def test_every_kind_is_sent_prepared_and_every_kind_comes_back(
    stack: Stack, nc: NATS, settings: Settings
) -> None:
    receiver = stack.receiver
    with stack.connector() as (_, connector_url):
        await eventually(lambda: ready(connector_url), timeout=30)
        await cs.create_instance(nc, settings.topology, "acme")
        await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "open"), timeout=20)
        await play(nc, settings, {"from": MEMBER, "chat": GROUP, "id": "INB1", "text": "hi all"})
        await receiver.wait_for(lambda e: e["data"].get("message_id") == "INB1", timeout=20)

        async with RelayClient(stack.relay_url, API_KEY_ID, API_SECRET) as client:
            # a quote of a message the connector saw carries its author and content
            quote = await send(client, {"to": GROUP, "text": "replying", "reply_to": "INB1"})
            assert quote["status"] == "sent", quote
            record = await sent_record(nc, settings, quote["message_id"])
            assert record["context"]["quoted"]["sender"] == MEMBER
            assert record["context"]["quoted"]["text"] == "hi all"
            # ... and of one it did not see, what the caller said of it
            described = {"sender": SOMEONE, "text": "earlier words"}
            told = await send(
                client, {"to": GROUP, "text": "re", "reply_to": "UNSEEN1", "quoted": described}
            )
            record = await sent_record(nc, settings, told["message_id"])
            assert record["context"]["quoted"]["sender"] == f"{SOMEONE}@s.whatsapp.net"
            assert record["context"]["quoted"]["text"] == "earlier words"

            # a reaction in a group names the reacted message's author
            reaction = await send(
                client, {"type": "reaction", "to": GROUP, "message_id": "INB1", "emoji": "👍"}
            )
            record = await sent_record(nc, settings, reaction["message_id"])
            assert record["context"]["target"]["sender"] == MEMBER

            # edit: our own message within the window; someone else's is refused
            own = await send(client, {"to": SOMEONE, "text": "typo"})
            edit = await send(
                client, {"type": "edit", "to": SOMEONE, "message_id": own["message_id"],
                         "text": "fixed"},
            )  # fmt: skip
            assert edit["status"] == "sent", edit
            refused = await send(
                client, {"type": "edit", "to": GROUP, "message_id": "INB1", "text": "no"}
            )
            assert (refused["status"], refused["error_code"]) == ("failed", "not_own_message")

            # delete for everyone: our own message
            deleted = await send(
                client, {"type": "delete", "to": SOMEONE, "message_id": own["message_id"]}
            )
            assert deleted["status"] == "sent", deleted

            # contact cards, several in one message
            cards = [
                {"name": "Ana", "phones": ["+55 11 91234-5678"]},
                {"name": "Bo", "vcard": "BEGIN:VCARD\nVERSION:3.0\nFN:Bo\nEND:VCARD"},
            ]
            contact = await send(client, {"type": "contact", "to": SOMEONE, "contacts": cards})
            record = await sent_record(nc, settings, contact["message_id"])
            assert [card["name"] for card in record["data"]["contacts"]] == ["Ana", "Bo"]
            assert record["data"]["contacts"][0]["phones"] == ["5511912345678"]

            # a sticker from a PNG becomes WebP
            sticker = await send(client, {"type": "sticker", "to": SOMEONE, "base64": b64(png())})
            record = await sent_record(nc, settings, sticker["message_id"])
            assert record["context"]["media"]["mimetype"] == "image/webp"
            assert record["context"]["media"]["animated"] is False

            # a voice note from a WAV becomes Ogg/Opus with its duration and waveform
            voice = await send(
                client,
                {
                    "type": "audio",
                    "to": SOMEONE,
                    "voice": True,
                    "base64": b64(wav_tone(rate=44_100, channels=2)),
                },
            )
            assert voice["status"] == "sent", voice
            record = await sent_record(nc, settings, voice["message_id"])
            media = record["context"]["media"]
            assert media["mimetype"] == "audio/ogg; codecs=opus"
            assert media["seconds"] == 2
            assert len(media["waveform"]) == 64
            assert max(media["waveform"]) > 0

            # view-once image
            once = await send(
                client, {"type": "image", "to": SOMEONE, "base64": b64(jpeg()), "view_once": True}
            )
            record = await sent_record(nc, settings, once["message_id"])
            assert record["data"]["view_once"] is True

            # link previews: fetched by the connector (through the guard), or given
            page = f"{stack.site_url}/page"
            fetched = await send(
                client, {"to": SOMEONE, "text": f"look: {page} !", "link_preview": True}
            )
            record = await sent_record(nc, settings, fetched["message_id"])
            preview = record["context"]["preview"]
            assert preview["url"] == page
            assert preview["title"] == "The wabus page"
            assert preview["description"] == "Nothing lost, nothing twice."
            assert preview["thumbnail_size"] > 0
            given = {"url": "https://example.com/x", "title": "Given", "description": "as is"}
            told_preview = await send(
                client, {"to": SOMEONE, "text": "https://example.com/x", "link_preview": given}
            )
            record = await sent_record(nc, settings, told_preview["message_id"])
            assert record["context"]["preview"]["title"] == "Given"
            plain = await send(client, {"to": SOMEONE, "text": f"no preview {page}"})
            assert (
                "preview" not in (await sent_record(nc, settings, plain["message_id"]))["context"]
            )

            # forward: a message seen; an unknown one is refused
            forward = await send(client, {"type": "forward", "to": SOMEONE, "message_id": "INB1"})
            record = await sent_record(nc, settings, forward["message_id"])
            assert record["context"]["target"]["text"] == "hi all"
            unknown = await send(
                client, {"type": "forward", "to": SOMEONE, "message_id": "NEVERSEEN"}
            )
            assert (unknown["status"], unknown["error_code"]) == ("failed", "message_unknown")

            # a poll, and a vote for it decrypted to the option's name
            poll = await send(
                client,
                {"type": "poll", "to": GROUP, "question": "Lunch?", "options": ["A", "B", "C"]},
            )
            assert poll["status"] == "sent", poll
            await play(
                nc,
                settings,
                {"from": MEMBER, "chat": GROUP, "id": "VOTE1",
                 "vote": {"poll_id": poll["message_id"], "options": ["B"]}},
            )  # fmt: skip
            vote = await receiver.wait_for(lambda e: e["type"] == "poll.vote", timeout=20)
            assert vote["data"]["poll_id"] == poll["message_id"]
            assert vote["data"]["from"] == MEMBER
            assert (vote["data"]["decrypted"], vote["data"]["selected"]) == (True, ["B"])

            # bad input: media a voice note cannot be made of is refused before it is queued
            with pytest.raises(RelayError) as refused_media:
                await client.send(
                    "acme",
                    {"type": "audio", "to": SOMEONE, "voice": True, "base64": b64(b"no audio")},
                )
            assert refused_media.value.status == 422
            assert refused_media.value.code == "undecodable_media"

        # every kind inbound, back as a webhook
        kinds: list[dict[str, Any]] = [
            {"type": "location", "location": {"latitude": -23.5, "longitude": -46.6}},
            {"type": "contact", "contacts": [
                {"display_name": "Ana", "vcard": "BEGIN:VCARD\nFN:Ana\nEND:VCARD"},
                {"display_name": "Bo", "vcard": "BEGIN:VCARD\nFN:Bo\nEND:VCARD"}]},
            {"type": "sticker", "media": {"mimetype": "image/webp", "animated": True}},
            {"type": "audio", "media": {"mimetype": "audio/ogg; codecs=opus", "voice": True},
             "view_once": True},
            {"type": "image", "media": {"mimetype": "image/jpeg"}, "view_once": True},
            {"type": "text", "text": "passed on", "forwarded": True},
            {"type": "text", "text": "quoting", "quoted_message_id": "INB1"},
            {"type": "reaction", "reaction": {"target_message_id": "INB1", "emoji": "❤"}},
            {"type": "edit", "target_message_id": "INB1", "text": "hi all (edited)"},
            {"type": "revoke", "target_message_id": "INB1"},
            {"type": "poll", "poll": {"question": "Q?", "options": ["x", "y"],
                                      "selectable_count": 1}},
        ]  # fmt: skip
        for number, kind in enumerate(kinds):
            await play(nc, settings, {"from": MEMBER, "chat": GROUP, "id": f"K{number}", **kind})
        for number, kind in enumerate(kinds):
            event = await receiver.wait_for(message_numbered(f"K{number}"), timeout=20)
            data = event["data"]
            assert data["type"] == kind["type"]
            for field, value in kind.items():
                if isinstance(value, dict):
                    for key, expected in value.items():
                        assert data[field][key] == expected, (field, key)
                elif field == "contacts":
                    assert [c["display_name"] for c in data["contacts"]] == ["Ana", "Bo"]
                    assert data["contact"]["display_name"] == "Ana"
                else:
                    assert data[field] == value, field
        # a vote in the inbound poll (its secret given by its author's phone) decrypts too
        await play(
            nc,
            settings,
            {"from": SOMEONE, "chat": GROUP, "id": "VOTE2",
             "vote": {"poll_id": f"K{len(kinds) - 1}", "options": ["y"]}},
        )  # fmt: skip
        vote = await receiver.wait_for(
            lambda e: e["type"] == "poll.vote" and e["data"]["message_id"] == "VOTE2", timeout=20
        )
        assert vote["data"]["selected"] == ["y"]


async def test_poll_votes_decrypt_after_the_connector_is_killed_and_started_again(
    stack: Stack, nc: NATS, settings: Settings
) -> None:
    receiver = stack.receiver
    with stack.connector() as (first, connector_url):
        await eventually(lambda: ready(connector_url), timeout=30)
        await cs.create_instance(nc, settings.topology, "acme")
        await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "open"), timeout=20)
        async with RelayClient(stack.relay_url, API_KEY_ID, API_SECRET) as client:
            poll = await send(
                client,
                {"type": "poll", "to": GROUP, "question": "Which?",
                 "options": ["one", "two", "three"], "selectable_count": 2},
            )  # fmt: skip
        assert poll["status"] == "sent", poll
        first.send_signal(signal.SIGKILL)
        first.wait()

    with stack.connector() as (_, connector_url):
        await eventually(lambda: ready(connector_url), timeout=30)
        await eventually(lambda: session_open_here(nc, settings), timeout=20)
        votes = [("V1", ["three", "one"]), ("V2", []), ("V3", ["two"])]
        for vote_id, options in votes:
            await play(
                nc,
                settings,
                {"from": MEMBER, "chat": GROUP, "id": vote_id,
                 "vote": {"poll_id": poll["message_id"], "options": options}},
            )  # fmt: skip
        # a vote in a poll nobody remembers is still reported, as not decrypted
        await play(
            nc,
            settings,
            {"from": MEMBER, "chat": GROUP, "id": "V4",
             "vote": {"poll_id": "NOPOLL", "options": ["x"]}},
        )  # fmt: skip

        async def four_votes() -> bool:
            return len(receiver.events("poll.vote")) >= 4

        await eventually(four_votes, timeout=20)
        sent = (await cs.sim(nc, settings.topology, "acme", "sent"))["sent"]

    by_id = {e["data"]["message_id"]: e["data"] for e in receiver.events("poll.vote")}
    assert by_id["V1"]["selected"] == ["one", "three"]  # in the poll's order
    assert by_id["V2"]["selected"] == []  # the vote taken back
    assert by_id["V3"]["selected"] == ["two"]
    assert all(by_id[v]["decrypted"] for v in ("V1", "V2", "V3"))
    assert (by_id["V4"]["decrypted"], by_id["V4"]["selected"]) == (False, None)
    assert [entry["message_id"] for entry in sent] == [poll["message_id"]]  # sent once
