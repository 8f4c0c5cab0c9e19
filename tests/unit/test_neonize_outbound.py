"""Send commands → the waE2E messages they become, on real neonize protobufs.

Every built message goes through `wire`: serialised and parsed back with `e2e.Message.FromString`
(as the Go side receives it), which proves it is a valid protobuf equal to what was built; the
assertions then read the parsed copy. What a builder puts in follows whatsmeow's own builders
(`BuildMessageKey`, `BuildEdit`, `BuildRevoke`, `BuildPollCreation`)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from connector.engine import PreparedMedia, SendContext
from connector.engines.neonize_lib import (
    ChatPresence,
    ChatPresenceMedia,
    MediaType,
    e2e,
    nz,
)
from connector.engines.neonize_outbound import (
    POLL_SECRET_BYTES,
    build_contacts,
    build_delete,
    build_edit,
    build_forward,
    build_location,
    build_media,
    build_poll,
    build_reaction,
    build_text,
    chat_presence,
    content_to_remember,
    media_type,
    message_key,
    poll_secret_of,
    to_jid,
    vcard,
)
from connector.link_preview import LinkPreview
from connector.preparation import quoted_of
from connector.seen import SeenMessage
from schemas.commands import (
    ContactCard,
    Presence,
    SendAudio,
    SendContact,
    SendDelete,
    SendDocument,
    SendEdit,
    SendImage,
    SendLocation,
    SendMedia,
    SendPoll,
    SendReaction,
    SendSticker,
    SendText,
    SendVideo,
    parse_send,
)
from schemas.events import MessageKind

PNG = b"\x89PNG\r\n\x1a\n" + bytes.fromhex("0000000d49484452000000010000000108060000001f15c489")
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
OWN_JID = "15550009999@s.whatsapp.net"
PEER = "4915112345678"
PEER_JID = f"{PEER}@s.whatsapp.net"
GROUP = "120363000000000001@g.us"
AUTHOR = "1555000111"
AUTHOR_JID = f"{AUTHOR}@s.whatsapp.net"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
NO_CONTEXT = SendContext()


def wire(built: Any) -> Any:
    """The message as the Go side gets it: serialised, parsed back, and equal to what was built."""
    assert isinstance(built, e2e.Message)
    data = built.SerializeToString()
    parsed = e2e.Message.FromString(data)
    assert parsed == built
    assert parsed.IsInitialized()
    return parsed


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


def seen(content: Any | None = None, **fields: Any) -> SeenMessage:
    """A remembered message; `content` (a waE2E `Message`) becomes its `raw` copy."""
    values: dict[str, Any] = {
        "message_id": "3EB0SEEN",
        "chat": GROUP,
        "sender": AUTHOR_JID,
        "from_me": False,
        "timestamp": NOW,
        "kind": MessageKind.TEXT,
        "text": "what they said",
    }
    if content is not None:
        values["raw"] = content.SerializeToString()
    return SeenMessage(**(values | fields))


def image_content(**fields: Any) -> Any:
    upload = upload_response()
    image = e2e.ImageMessage(
        URL=upload.url,
        directPath=upload.DirectPath,
        mediaKey=upload.MediaKey,
        fileEncSHA256=upload.FileEncSHA256,
        fileSHA256=upload.FileSHA256,
        fileLength=upload.FileLength,
        mimetype="image/jpeg",
        caption="the view",
        **fields,
    )
    return e2e.Message(imageMessage=image)


# -- text -----------------------------------------------------------------------------------


def test_plain_text_is_a_conversation() -> None:
    message = wire(build_text(SendText(to="+49 151 1234-5678", text="hello"), NO_CONTEXT))
    assert message.conversation == "hello"
    assert not message.HasField("extendedTextMessage")


def test_reply_to_an_unseen_message_and_mentions_ride_in_the_context() -> None:
    send = SendText(to=PEER, text="@1555 look", reply_to="3EB0QUOTED", mentions=["1555000111"])
    message = wire(build_text(send, NO_CONTEXT, OWN_JID))
    assert not message.HasField("conversation")
    extended = message.extendedTextMessage
    assert extended.text == "@1555 look"
    assert extended.contextInfo.stanzaID == "3EB0QUOTED"
    assert list(extended.contextInfo.mentionedJID) == ["1555000111@s.whatsapp.net"]
    assert not extended.contextInfo.HasField("participant")  # nothing known of the quoted
    assert not extended.contextInfo.HasField("quotedMessage")


def test_a_quote_of_a_seen_message_carries_its_author_and_remembered_content() -> None:
    quoted = seen(image_content(), kind=MessageKind.IMAGE, text="the view")
    send = SendText(to=GROUP, text="nice", reply_to="3EB0SEEN")
    info = wire(
        build_text(send, SendContext(quoted=quoted), OWN_JID)
    ).extendedTextMessage.contextInfo
    assert info.stanzaID == "3EB0SEEN"
    assert info.participant == AUTHOR_JID
    assert info.quotedMessage == image_content()  # parsed from the remembered copy
    assert info.quotedMessage.imageMessage.caption == "the view"


def test_a_quoted_author_written_with_a_device_is_named_without_it() -> None:
    quoted = seen(sender=AUTHOR_JID.replace("@", ":3@"))
    send = SendText(to=GROUP, text="nice", reply_to="3EB0SEEN")
    info = wire(
        build_text(send, SendContext(quoted=quoted), OWN_JID)
    ).extendedTextMessage.contextInfo
    assert info.participant == AUTHOR_JID


@pytest.mark.parametrize(
    ("raw", "why"), [(None, "no copy kept"), (b"\xff\xff", "an unreadable copy")]
)
def test_a_quote_without_a_readable_copy_quotes_the_text(raw: bytes | None, why: str) -> None:
    quoted = seen(raw=raw, text="the words")
    send = SendText(to=GROUP, text="re", reply_to="3EB0SEEN")
    info = wire(
        build_text(send, SendContext(quoted=quoted), OWN_JID)
    ).extendedTextMessage.contextInfo
    assert info.quotedMessage == e2e.Message(conversation="the words"), why
    assert info.participant == AUTHOR_JID


def test_a_quote_the_caller_described_shows_their_sender_and_text() -> None:
    send = parse_send(
        {
            "to": GROUP,
            "text": "re",
            "reply_to": "3EB0UNSEEN",
            "quoted": {"sender": "+1 555 000-111", "text": "their words"},
        }
    )
    assert isinstance(send, SendText)
    context = SendContext(quoted=quoted_of(send, None))
    info = wire(build_text(send, context, OWN_JID)).extendedTextMessage.contextInfo
    assert info.stanzaID == "3EB0UNSEEN"
    assert info.participant == AUTHOR_JID
    assert info.quotedMessage.conversation == "their words"


def test_a_quote_of_our_own_message_names_us_as_its_author() -> None:
    ours = seen(e2e.Message(conversation="we said"), sender="", from_me=True, text="we said")
    send = SendText(to=GROUP, text="as I said", reply_to="3EB0SEEN")
    info = wire(build_text(send, SendContext(quoted=ours), OWN_JID)).extendedTextMessage.contextInfo
    assert info.participant == OWN_JID
    assert info.quotedMessage.conversation == "we said"
    # without knowing who we are, no author rather than a wrong one
    unknown = wire(build_text(send, SendContext(quoted=ours), None)).extendedTextMessage
    assert not unknown.contextInfo.HasField("participant")
    assert unknown.contextInfo.quotedMessage.conversation == "we said"


def test_a_link_preview_fills_the_extended_text() -> None:
    preview = LinkPreview("https://example.com/a", "A page", "All about it", b"\xff\xd8jpeg")
    send = SendText(to=PEER, text="see https://example.com/a", link_preview=True)
    extended = wire(build_text(send, SendContext(preview=preview))).extendedTextMessage
    assert extended.text == "see https://example.com/a"
    assert extended.matchedText == "https://example.com/a"
    assert (extended.title, extended.description) == ("A page", "All about it")
    assert extended.JPEGThumbnail == b"\xff\xd8jpeg"
    assert extended.previewType == e2e.ExtendedTextMessage.PreviewType.NONE
    assert not extended.HasField("contextInfo")


def test_a_bare_link_preview_sets_only_what_it_has() -> None:
    preview = LinkPreview("https://example.com/a", None, None, None)
    send = SendText(to=PEER, text="https://example.com/a", link_preview=True)
    extended = wire(build_text(send, SendContext(preview=preview))).extendedTextMessage
    assert extended.matchedText == "https://example.com/a"
    for field in ("title", "description", "JPEGThumbnail"):
        assert not extended.HasField(field), field


def test_a_link_preview_and_a_quote_together() -> None:
    preview = LinkPreview("https://example.com/a", "A page", None, None)
    send = SendText(to=GROUP, text="https://example.com/a", reply_to="3EB0SEEN")
    context = SendContext(preview=preview, quoted=seen())
    extended = wire(build_text(send, context, OWN_JID)).extendedTextMessage
    assert (extended.matchedText, extended.title) == ("https://example.com/a", "A page")
    assert extended.contextInfo.stanzaID == "3EB0SEEN"
    assert extended.contextInfo.participant == AUTHOR_JID


def test_recipients_become_jids() -> None:
    person = to_jid(PEER)
    assert (person.User, person.Server) == (PEER, "s.whatsapp.net")
    group = to_jid(GROUP)
    assert (group.User, group.Server) == ("120363000000000001", "g.us")
    assert nz.JID.FromString(group.SerializeToString()) == group


def test_location_with_a_quote() -> None:
    send = SendLocation(
        type="location", to=GROUP, latitude=52.52, longitude=13.405, name="Mitte", reply_to="3EB0Q"
    )
    location = wire(build_location(send, SendContext(quoted=seen()), OWN_JID)).locationMessage
    assert (location.degreesLatitude, location.degreesLongitude) == (52.52, 13.405)
    assert location.name == "Mitte"
    assert not location.HasField("address")
    assert location.contextInfo.stanzaID == "3EB0Q"
    assert location.contextInfo.participant == AUTHOR_JID
    plain = wire(build_location(send.model_copy(update={"reply_to": None}), NO_CONTEXT))
    assert not plain.locationMessage.HasField("contextInfo")


# -- reactions, deletions, edits: keyed like whatsmeow's BuildMessageKey ----------------------

THEIRS = seen(sender=AUTHOR_JID, from_me=False)
OURS = seen(sender="", from_me=True)


@pytest.mark.parametrize(
    ("to", "fields", "target", "from_me", "participant"),
    [
        # in a group, someone else's message: the participant places the reaction
        (GROUP, {"sender": AUTHOR}, None, False, AUTHOR_JID),
        (GROUP, {}, THEIRS, False, AUTHOR_JID),  # the sender as the connector saw it
        (GROUP, {"sender": "1555000222"}, THEIRS, False, "1555000222@s.whatsapp.net"),
        (GROUP, {"sender": "1555000111@lid"}, None, False, "1555000111@lid"),
        # our own message, in a group or not
        (GROUP, {"from_me": True}, None, True, None),
        (GROUP, {}, OURS, True, None),
        (GROUP, {"sender": OWN_JID}, None, True, None),
        (GROUP, {"sender": "15550009999"}, None, True, None),
        # one-to-one chats name no participant
        (PEER, {}, seen(chat=PEER_JID, sender=PEER_JID), False, None),
        (PEER, {"sender": PEER}, None, False, None),
        ("1555000333@lid", {"sender": "1555000333@lid"}, None, False, None),
        # nothing known: taken to be our own (whatsmeow's default too)
        (PEER, {}, None, True, None),
    ],
)
def test_a_reaction_is_keyed_to_the_reacted_message(
    to: str,
    fields: dict[str, Any],
    target: SeenMessage | None,
    from_me: bool,
    participant: str | None,
) -> None:
    send = SendReaction(type="reaction", to=to, message_id="3EB0TARGET", emoji="👍", **fields)
    context = SendContext(target=target)
    reaction = wire(build_reaction(send, context, OWN_JID, NOW_MS)).reactionMessage
    assert reaction.text == "👍"
    assert reaction.senderTimestampMS == NOW_MS
    key = reaction.key
    assert (key.ID, key.remoteJID) == ("3EB0TARGET", to if "@" in to else f"{to}@s.whatsapp.net")
    assert key.fromMe is from_me
    if participant is None:
        assert not key.HasField("participant")
    else:
        assert key.participant == participant


def test_an_empty_emoji_takes_a_reaction_back() -> None:
    send = SendReaction(type="reaction", to=GROUP, message_id="3EB0TARGET", emoji="")
    reaction = wire(build_reaction(send, SendContext(target=THEIRS), OWN_JID, NOW_MS))
    assert reaction.reactionMessage.HasField("text")
    assert reaction.reactionMessage.text == ""
    assert reaction.reactionMessage.key.participant == AUTHOR_JID


@pytest.mark.parametrize(
    ("to", "fields", "target", "from_me", "participant"),
    [
        (PEER, {}, None, True, None),  # our own, by default
        (GROUP, {}, OURS, True, None),
        (GROUP, {"sender": AUTHOR}, None, False, AUTHOR_JID),  # an admin deleting theirs
        (GROUP, {}, THEIRS, False, AUTHOR_JID),
        (PEER, {"sender": PEER}, None, False, None),  # one-to-one: no participant
        (PEER, {}, seen(chat=PEER_JID, sender=PEER_JID), False, None),
    ],
)
def test_a_deletion_revokes_the_message_for_everyone(
    to: str,
    fields: dict[str, Any],
    target: SeenMessage | None,
    from_me: bool,
    participant: str | None,
) -> None:
    send = SendDelete(type="delete", to=to, message_id="3EB0GONE", **fields)
    message = wire(build_delete(send, SendContext(target=target), OWN_JID))
    protocol = message.protocolMessage
    assert protocol.type == e2e.ProtocolMessage.REVOKE
    assert protocol.key.ID == "3EB0GONE"
    assert protocol.key.remoteJID == (to if "@" in to else f"{to}@s.whatsapp.net")
    assert protocol.key.fromMe is from_me
    if participant is None:
        assert not protocol.key.HasField("participant")
    else:
        assert protocol.key.participant == participant


@pytest.mark.parametrize("to", [PEER, GROUP])
def test_an_edit_is_a_message_edit_of_our_own_message(to: str) -> None:
    send = SendEdit(type="edit", to=to, message_id="3EB0MINE", text="fixed typo")
    message = wire(build_edit(send, NOW_MS))
    assert not message.HasField("protocolMessage")  # it rides in `editedMessage`
    protocol = message.editedMessage.message.protocolMessage
    assert protocol.type == e2e.ProtocolMessage.MESSAGE_EDIT
    assert protocol.key.fromMe
    assert protocol.key.remoteJID == (to if "@" in to else f"{to}@s.whatsapp.net")
    assert protocol.key.ID == "3EB0MINE"
    assert not protocol.key.HasField("participant")
    assert protocol.editedMessage.conversation == "fixed typo"
    assert protocol.timestampMS == NOW_MS


@pytest.mark.parametrize(
    ("chat", "sender", "from_me", "participant"),
    [
        (GROUP, AUTHOR, False, AUTHOR_JID),
        (GROUP, None, True, None),
        (GROUP, "15550009999", True, None),
        (PEER_JID, AUTHOR, False, None),
        ("1555000333@lid", AUTHOR, False, None),
        ("1555000333@msgr", AUTHOR, False, None),
        ("status@broadcast", AUTHOR, False, AUTHOR_JID),
        # device JIDs: one of our own devices is us; another's device is named without it
        (GROUP, "15550009999:3@s.whatsapp.net", True, None),
        (GROUP, AUTHOR_JID.replace("@", ":7@"), False, AUTHOR_JID),
    ],
)
def test_message_key(chat: str, sender: str | None, from_me: bool, participant: str | None) -> None:
    key = message_key(chat, "3EB0K", sender, OWN_JID)
    assert (key.remoteJID, key.ID, key.fromMe) == (chat, "3EB0K", from_me)
    assert (key.participant if key.HasField("participant") else None) == participant


# -- polls ----------------------------------------------------------------------------------


def test_a_poll_carries_its_options_and_a_fresh_secret() -> None:
    send = SendPoll(
        type="poll",
        to=GROUP,
        question="Drink?",
        options=["tea", "coffee", "water"],
        selectable_count=2,
    )
    built = build_poll(send, NO_CONTEXT, OWN_JID)
    message = wire(built)
    poll = message.pollCreationMessage
    assert poll.name == "Drink?"
    assert [option.optionName for option in poll.options] == ["tea", "coffee", "water"]
    assert poll.selectableOptionsCount == 2
    secret = message.messageContextInfo.messageSecret
    assert len(secret) == POLL_SECRET_BYTES == 32
    assert poll_secret_of(built) == poll_secret_of(message) == secret
    again = poll_secret_of(build_poll(send, NO_CONTEXT, OWN_JID))
    assert again is not None
    assert len(again) == 32
    assert again != secret  # every poll its own secret


def test_a_poll_takes_a_given_secret_and_a_quote() -> None:
    send = SendPoll(type="poll", to=GROUP, question="Q?", options=["a", "b"], reply_to="3EB0SEEN")
    message = wire(build_poll(send, SendContext(quoted=seen()), OWN_JID, secret=b"\x07" * 32))
    assert message.messageContextInfo.messageSecret == b"\x07" * 32
    assert message.pollCreationMessage.selectableOptionsCount == 1
    assert message.pollCreationMessage.contextInfo.stanzaID == "3EB0SEEN"
    assert message.pollCreationMessage.contextInfo.participant == AUTHOR_JID


def test_only_polls_have_a_secret() -> None:
    assert poll_secret_of(build_text(SendText(to=PEER, text="x"), NO_CONTEXT)) is None
    poll = SendPoll(type="poll", to=PEER, question="Q?", options=["a", "b"])
    assert poll_secret_of(build_poll(poll, NO_CONTEXT, OWN_JID)) is not None  # the control


# -- contacts -------------------------------------------------------------------------------


def test_one_contact_is_a_contact_message_with_a_vcard_made_for_it() -> None:
    send = SendContact(
        type="contact", to=PEER, contacts=[ContactCard(name="Bo", phones=["+1 555 000-111"])]
    )
    message = wire(build_contacts(send, NO_CONTEXT))
    assert not message.HasField("contactsArrayMessage")
    card = message.contactMessage
    assert card.displayName == "Bo"
    lines = card.vcard.split("\n")
    assert lines[0] == "BEGIN:VCARD"
    assert lines[-1] == "END:VCARD"
    assert "FN:Bo" in lines
    assert "TEL;type=CELL;waid=1555000111:+1555000111" in lines
    assert "waid=1555000111" in card.vcard


def test_a_given_vcard_is_sent_as_it_is() -> None:
    given = "BEGIN:VCARD\nVERSION:3.0\nFN:Cy\nORG:Shop\nTEL:+44 20 7946 0000\nEND:VCARD"
    send = SendContact(type="contact", to=PEER, contacts=[ContactCard(name="Cy", vcard=given)])
    card = wire(build_contacts(send, NO_CONTEXT)).contactMessage
    assert (card.displayName, card.vcard) == ("Cy", given)


def test_several_contacts_are_one_contacts_array() -> None:
    given = "BEGIN:VCARD\nVERSION:3.0\nFN:Cy\nEND:VCARD"
    cards = [
        ContactCard(name="Bo", phones=["1555000111", "1555000222"]),
        ContactCard(name="Cy", vcard=given),
    ]
    send = SendContact(type="contact", to=GROUP, contacts=cards, reply_to="3EB0SEEN")
    message = wire(build_contacts(send, SendContext(quoted=seen()), OWN_JID))
    assert not message.HasField("contactMessage")
    array = message.contactsArrayMessage
    assert array.displayName == "2 contacts"
    assert [card.displayName for card in array.contacts] == ["Bo", "Cy"]
    assert "waid=1555000111" in array.contacts[0].vcard
    assert "waid=1555000222" in array.contacts[0].vcard
    assert array.contacts[1].vcard == given
    assert array.contextInfo.stanzaID == "3EB0SEEN"
    assert array.contextInfo.participant == AUTHOR_JID


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Bo", "FN:Bo"),
        ("Doe, Jo; Jr", "FN:Doe\\, Jo\\; Jr"),
        ("back\\slash", "FN:back\\\\slash"),
        ("two\nlines\r", "FN:two lines "),  # a name cannot add vCard lines
    ],
)
def test_a_made_vcard_escapes_the_name(name: str, expected: str) -> None:
    made = vcard(ContactCard(name=name, phones=["1555000111"]))
    assert made.split("\n")[2] == expected
    assert made.count("\n") == 5  # BEGIN, VERSION, FN, N, TEL, END


# -- media ----------------------------------------------------------------------------------


def test_image_from_upload_with_caption_and_quote() -> None:
    send = SendImage(type="image", to=GROUP, base64=b64(PNG), caption="look", reply_to="3EB0Q")
    media = PreparedMedia(PNG, "image/png")
    context = SendContext(media=media, quoted=seen())
    message = wire(build_media(send, upload_response(), media, context, OWN_JID))
    assert not message.HasField("viewOnceMessage")
    image = message.imageMessage
    assert image.caption == "look"
    assert image.mimetype == "image/png"
    assert image.directPath == "/v/t62/abc"
    assert image.URL == "https://mmg.whatsapp.net/v/t62/abc"
    assert image.mediaKey == b"k" * 32
    assert image.fileSHA256 == b"s" * 32
    assert image.fileEncSHA256 == b"e" * 32
    assert image.fileLength == 1234
    assert not image.viewOnce
    assert image.contextInfo.stanzaID == "3EB0Q"
    assert image.contextInfo.participant == AUTHOR_JID


def test_video_song_and_document() -> None:
    upload = upload_response()
    video = SendVideo(type="video", to=PEER, base64=b64(b"v"), caption="clip")
    mp4 = PreparedMedia(b"v", "video/mp4")
    clip = wire(build_media(video, upload, mp4, SendContext(media=mp4))).videoMessage
    assert (clip.caption, clip.mimetype, clip.viewOnce) == ("clip", "video/mp4", False)
    song = SendAudio(type="audio", to=PEER, base64=b64(b"a"))
    mp3 = PreparedMedia(b"a", "audio/mpeg")
    audio = wire(build_media(song, upload, mp3, SendContext(media=mp3))).audioMessage
    assert not audio.PTT
    assert audio.mimetype == "audio/mpeg"
    assert not audio.HasField("seconds")
    assert not audio.HasField("waveform")
    send = SendDocument(
        type="document", to=PEER, base64=b64(PDF), filename="march.pdf", caption="pay"
    )
    pdf = PreparedMedia(PDF, "application/pdf")
    document = wire(build_media(send, upload, pdf, SendContext(media=pdf))).documentMessage
    assert (document.fileName, document.title, document.caption) == (
        "march.pdf",
        "march.pdf",
        "pay",
    )
    assert document.mimetype == "application/pdf"
    unnamed = send.model_copy(update={"filename": None})
    assert wire(build_media(unnamed, upload, pdf, NO_CONTEXT)).documentMessage.fileName == "file"


def test_a_voice_note_carries_its_seconds_and_waveform() -> None:
    send = SendAudio(type="audio", to=PEER, base64=b64(b"a"), voice=True)
    waveform = bytes(range(64))
    note = PreparedMedia(b"OggS", "audio/ogg; codecs=opus", seconds=7, waveform=waveform)
    audio = wire(build_media(send, upload_response(), note, SendContext(media=note))).audioMessage
    assert audio.PTT
    assert audio.mimetype == "audio/ogg; codecs=opus"
    assert audio.seconds == 7
    assert audio.waveform == waveform
    assert not audio.viewOnce


@pytest.mark.parametrize("animated", [False, True])
def test_a_sticker(animated: bool) -> None:
    send = SendSticker(type="sticker", to=PEER, base64=b64(b"RIFF....WEBP"))
    webp = PreparedMedia(b"RIFF....WEBP", "image/webp", animated=animated)
    message = wire(build_media(send, upload_response(), webp, SendContext(media=webp)))
    sticker = message.stickerMessage
    assert sticker.isAnimated is animated
    assert sticker.mimetype == "image/webp"
    assert (sticker.width, sticker.height) == (512, 512)
    assert sticker.directPath == "/v/t62/abc"
    assert sticker.mediaKey == b"k" * 32
    assert media_type(send) is MediaType.MediaImage  # encrypted with the image keys


@pytest.mark.parametrize(
    ("fields", "part"),
    [
        ({"type": "image", "caption": "once"}, "imageMessage"),
        ({"type": "video", "caption": "once"}, "videoMessage"),
        ({"type": "audio", "voice": True}, "audioMessage"),
    ],
)
def test_view_once_media_is_wrapped(fields: dict[str, Any], part: str) -> None:
    send: Any = parse_send({"to": PEER, "base64": b64(b"x"), "view_once": True, **fields})
    media = PreparedMedia(b"x", "application/octet-stream", seconds=3, waveform=b"\x01" * 64)
    built = build_media(send, upload_response(), media, SendContext(media=media))
    message = wire(built)
    assert not message.HasField(part)
    inner = message.viewOnceMessage.message
    assert inner.HasField(part)
    assert getattr(inner, part).viewOnce
    assert getattr(inner, part).mediaKey == b"k" * 32
    # what is remembered of it (for quotes and forwards) is the content, out of the wrapper
    remembered = e2e.Message.FromString(content_to_remember(built))
    assert not remembered.HasField("viewOnceMessage")
    assert remembered.HasField(part)
    assert remembered == inner
    # the control: the same media, not view-once, is not wrapped
    plain = wire(
        build_media(
            send.model_copy(update={"view_once": False}), upload_response(), media, NO_CONTEXT
        )
    )
    assert plain.HasField(part)
    assert not getattr(plain, part).viewOnce


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("image", MediaType.MediaImage),
        ("video", MediaType.MediaVideo),
        ("audio", MediaType.MediaAudio),
        ("document", MediaType.MediaDocument),
        ("sticker", MediaType.MediaImage),
    ],
)
def test_each_media_kind_uploads_with_its_media_type(kind: str, expected: Any) -> None:
    send = parse_send({"type": kind, "to": PEER, "base64": b64(b"x")})
    assert isinstance(send, SendMedia)
    assert media_type(send) is expected


# -- forwards -------------------------------------------------------------------------------


def test_a_forwarded_text_becomes_an_extended_text_marked_forwarded() -> None:
    original = seen(e2e.Message(conversation="pass it on"), text="pass it on")
    message = wire(build_forward(original))
    assert not message.HasField("conversation")
    extended = message.extendedTextMessage
    assert extended.text == "pass it on"
    assert extended.contextInfo.isForwarded
    assert extended.contextInfo.forwardingScore == 1


def test_a_forward_drops_the_originals_quote_and_mentions() -> None:
    context = e2e.ContextInfo(stanzaID="3EB0OLD", participant=PEER_JID, mentionedJID=[PEER_JID])
    content = e2e.Message(
        extendedTextMessage=e2e.ExtendedTextMessage(text="re: that", contextInfo=context)
    )
    info = wire(build_forward(seen(content))).extendedTextMessage.contextInfo
    assert (info.isForwarded, info.forwardingScore) == (True, 1)
    for field in ("stanzaID", "participant", "quotedMessage"):
        assert not info.HasField(field), field
    assert list(info.mentionedJID) == []


def test_a_forwarded_image_keeps_its_upload_and_counts_the_forward() -> None:
    already = e2e.ContextInfo(isForwarded=True, forwardingScore=3)
    original = seen(image_content(contextInfo=already), kind=MessageKind.IMAGE)
    image = wire(build_forward(original)).imageMessage
    upload = upload_response()
    assert (image.URL, image.directPath) == (upload.url, upload.DirectPath)
    assert (image.mediaKey, image.fileSHA256, image.fileEncSHA256) == (
        upload.MediaKey,
        upload.FileSHA256,
        upload.FileEncSHA256,
    )
    assert (image.caption, image.mimetype, image.fileLength) == ("the view", "image/jpeg", 1234)
    assert image.contextInfo.isForwarded
    assert image.contextInfo.forwardingScore == 4
    first = wire(build_forward(seen(image_content(), kind=MessageKind.IMAGE))).imageMessage
    assert first.contextInfo.forwardingScore == 1


@pytest.mark.parametrize(
    ("content", "part"),
    [
        (
            e2e.Message(
                locationMessage=e2e.LocationMessage(degreesLatitude=1.5, degreesLongitude=2.5)
            ),
            "locationMessage",
        ),
        (
            e2e.Message(contactMessage=e2e.ContactMessage(displayName="Bo", vcard="BEGIN:VCARD")),
            "contactMessage",
        ),
        (
            e2e.Message(documentMessage=e2e.DocumentMessage(fileName="a.pdf", directPath="/d")),
            "documentMessage",
        ),
    ],
)
def test_other_forwardable_content_is_copied_and_marked(content: Any, part: str) -> None:
    message = wire(build_forward(seen(content)))
    forwarded = getattr(message, part)
    original = getattr(content, part)
    for field, value in original.ListFields():
        assert getattr(forwarded, field.name) == value
    assert (forwarded.contextInfo.isForwarded, forwarded.contextInfo.forwardingScore) == (True, 1)


def test_a_message_we_sent_forwards_from_what_we_remembered_of_it() -> None:
    sent = build_text(SendText(to=PEER, text="ours"), NO_CONTEXT)
    ours = seen(raw=content_to_remember(sent), from_me=True, sender="")
    assert wire(build_forward(ours)).extendedTextMessage.text == "ours"


def test_nothing_forwardable_in_the_copy_is_an_error() -> None:
    poll = e2e.Message(pollCreationMessage=e2e.PollCreationMessage(name="Q?"))
    with pytest.raises(ValueError, match="nothing forwardable"):
        build_forward(seen(poll, kind=MessageKind.POLL))


def test_what_is_remembered_of_a_plain_message_is_the_message() -> None:
    built = build_text(SendText(to=PEER, text="hello"), NO_CONTEXT)
    assert e2e.Message.FromString(content_to_remember(built)) == built


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
    assert chat_presence(Presence(chat=PEER, state=state)) == expected
