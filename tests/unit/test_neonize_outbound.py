"""Send commands → the neonize protobufs they become, checked on the real messages (after a
serialise/parse round trip, as the Go side receives them)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from connector.engine import SendError
from connector.engines.neonize_lib import (
    ChatPresence,
    ChatPresenceMedia,
    MediaType,
    e2e,
    nz,
)
from connector.engines.neonize_outbound import (
    build_location,
    build_media,
    build_reaction,
    build_text,
    chat_presence,
    decode_base64,
    load_media,
    media_type,
    mimetype_of,
    to_jid,
)
from schemas.commands import (
    Presence,
    SendAudio,
    SendDocument,
    SendImage,
    SendLocation,
    SendReaction,
    SendText,
    SendVideo,
    parse_send,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes.fromhex("0000000d49484452000000010000000108060000001f15c489")
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"


def on_the_wire(message: Any) -> Any:
    return e2e.Message.FromString(message.SerializeToString())


def upload_response() -> Any:
    return nz.UploadResponse(
        url="https://mmg.whatsapp.net/v/t62/abc",
        DirectPath="/v/t62/abc",
        Handle="",
        MediaKey=b"k" * 32,
        FileEncSHA256=b"e" * 32,
        FileSHA256=b"s" * 32,
        FileLength=1234,
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_text_is_a_conversation() -> None:
    message = on_the_wire(build_text(SendText(to="+49 151 1234-5678", text="hello")))
    assert message.conversation == "hello"
    assert not message.HasField("extendedTextMessage")


def test_reply_and_mentions_ride_in_the_context() -> None:
    send = SendText(
        to="4915112345678", text="@1555 look", reply_to="3EB0QUOTED", mentions=["1555000111"]
    )
    message = on_the_wire(build_text(send))
    assert not message.HasField("conversation")
    extended = message.extendedTextMessage
    assert extended.text == "@1555 look"
    assert extended.contextInfo.stanzaID == "3EB0QUOTED"
    assert list(extended.contextInfo.mentionedJID) == ["1555000111@s.whatsapp.net"]


def test_recipients_become_jids() -> None:
    person = to_jid("4915112345678")
    assert (person.User, person.Server) == ("4915112345678", "s.whatsapp.net")
    group = to_jid("120363000000000001@g.us")
    assert (group.User, group.Server) == ("120363000000000001", "g.us")
    assert nz.JID.FromString(group.SerializeToString()) == group


def test_location() -> None:
    send = SendLocation(
        type="location", to="4915112345678", latitude=52.52, longitude=13.405, name="Mitte"
    )
    location = on_the_wire(build_location(send)).locationMessage
    assert (location.degreesLatitude, location.degreesLongitude) == (52.52, 13.405)
    assert location.name == "Mitte"
    assert not location.HasField("address")


def test_reaction_targets_the_message_in_the_chat() -> None:
    send = SendReaction(
        type="reaction", to="4915112345678", message_id="3EB0TARGET", emoji="👍", from_me=True
    )
    reaction = on_the_wire(build_reaction(send, now_ms=1_700_000_000_000)).reactionMessage
    assert reaction.text == "👍"
    assert reaction.key.ID == "3EB0TARGET"
    assert reaction.key.remoteJID == "4915112345678@s.whatsapp.net"
    assert reaction.key.fromMe
    assert reaction.senderTimestampMS == 1_700_000_000_000


def test_image_from_upload_with_caption_and_quote() -> None:
    send = SendImage(
        type="image", to="4915112345678", base64=b64(PNG), caption="look", reply_to="3EB0Q"
    )
    image = on_the_wire(build_media(send, upload_response(), "image/png")).imageMessage
    assert image.caption == "look"
    assert image.mimetype == "image/png"
    assert image.directPath == "/v/t62/abc"
    assert image.URL == "https://mmg.whatsapp.net/v/t62/abc"
    assert image.mediaKey == b"k" * 32
    assert image.fileSHA256 == b"s" * 32
    assert image.fileEncSHA256 == b"e" * 32
    assert image.fileLength == 1234
    assert image.contextInfo.stanzaID == "3EB0Q"


def test_video_audio_voice_and_document() -> None:
    upload = upload_response()
    video = SendVideo(type="video", to="4915112345678", base64=b64(b"v"), caption="clip")
    assert on_the_wire(build_media(video, upload, "video/mp4")).videoMessage.caption == "clip"
    voice = SendAudio(type="audio", to="4915112345678", base64=b64(b"a"), voice=True)
    audio = on_the_wire(build_media(voice, upload, "audio/ogg; codecs=opus")).audioMessage
    assert audio.PTT
    assert audio.mimetype == "audio/ogg; codecs=opus"
    song = SendAudio(type="audio", to="4915112345678", base64=b64(b"a"))
    assert not on_the_wire(build_media(song, upload, "audio/mpeg")).audioMessage.PTT
    send = SendDocument(
        type="document", to="4915112345678", base64=b64(PDF), filename="march.pdf", caption="pay"
    )
    document = on_the_wire(build_media(send, upload, "application/pdf")).documentMessage
    assert (document.fileName, document.caption) == ("march.pdf", "pay")
    assert document.mimetype == "application/pdf"


def test_each_media_kind_uploads_with_its_media_type() -> None:
    kinds = {"image": MediaType.MediaImage, "video": MediaType.MediaVideo}
    kinds |= {"audio": MediaType.MediaAudio, "document": MediaType.MediaDocument}
    for kind, expected in kinds.items():
        send: Any = parse_send({"type": kind, "to": "4915112345678", "base64": b64(b"x")})
        assert media_type(send) is expected


def test_mimetype_declared_else_sniffed_else_default() -> None:
    declared = SendImage(type="image", to="1555000111", base64=b64(PNG), mimetype="image/x-test")
    assert mimetype_of(declared, PNG) == "image/x-test"
    sniffed = SendDocument(type="document", to="1555000111", base64=b64(PDF))
    assert mimetype_of(sniffed, PDF) == "application/pdf"
    unknown = SendVideo(type="video", to="1555000111", base64=b64(b"\x00\x01"))
    assert mimetype_of(unknown, b"\x00\x01") == "video/mp4"


async def test_base64_media_loads_with_its_mimetype() -> None:
    send = SendDocument(type="document", to="1555000111", base64=b64(PDF))
    assert await load_media(send) == (PDF, "application/pdf")


def test_base64_errors_are_send_errors() -> None:
    with pytest.raises(SendError) as invalid:
        decode_base64("not base64!")
    assert invalid.value.code == "invalid_media"
    with pytest.raises(SendError) as large:
        decode_base64(b64(b"x" * 11), limit=10)
    assert large.value.code == "media_too_large"
    assert not large.value.retryable


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            "composing",
            (ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
        ),
        (
            "recording",
            (ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO),
        ),
        ("paused", (ChatPresence.CHAT_PRESENCE_PAUSED, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT)),
    ],
)
def test_chat_presence(state: Any, expected: tuple[Any, Any]) -> None:
    assert chat_presence(Presence(chat="4915112345678", state=state)) == expected
