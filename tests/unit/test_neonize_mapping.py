"""neonize events → v1 events, driven by real neonize protobuf objects (built with their own
constructors and passed through a serialise/parse round trip, as they arrive from Go)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from connector.engine import EncryptedVote
from connector.engines.neonize_lib import e2e, nz, wa_common
from connector.engines.neonize_mapping import (
    CONNECT_FAILURES,
    call_ended,
    call_offer_notice,
    call_offered,
    chat_presence,
    close_reason,
    connect_error_reason,
    device_jid_str,
    downloadable,
    from_unix,
    group_changes,
    group_settings,
    inbound,
    jid_str,
    joined_group,
    login_status_reason,
    message_received,
    parse_device_jid,
    poll_vote,
    presence_update,
    qr_expires_at,
    receipt,
    surely_not_sent,
    to_remember,
    view_once,
)
from connector.polls import decrypt_vote, encrypt_vote, option_hash
from connector.reasons import DisconnectReason
from schemas.events import (
    CallEnded,
    CallOffered,
    GroupJoined,
    GroupLeft,
    GroupParticipantsChanged,
    GroupSettingsChanged,
    MessageKind,
    MessageReceipt,
    MessageReceived,
    PresenceUpdate,
    ReceiptStatus,
)
from tests.neonize_protos import (
    OWN,
    PEER,
    SENT_AT,
    SENT_AT_MS,
    connect_failure,
    from_go,
    jid,
    message_event,
    presence_event,
    receipt_event,
)

FILE_HASH = bytes(range(32))


def received(content: Any, **options: Any) -> MessageReceived:
    mapped = message_received(message_event(content, **options))
    assert mapped is not None
    return mapped


def media_fields(**fields: Any) -> dict[str, Any]:
    return {
        "URL": "https://mmg.whatsapp.net/x",
        "directPath": "/v/t62/x",
        "mediaKey": b"k" * 32,
        "fileSHA256": FILE_HASH,
        "fileEncSHA256": b"e" * 32,
        **fields,
    }


def test_text_message_carries_sender_chat_time_and_push_name() -> None:
    message = received(e2e.Message(conversation="hello"))
    assert message.type is MessageKind.TEXT
    assert message.text == "hello"
    assert message.message_id == "3EB0AAAABBBBCCCCDDDD01"
    assert message.chat == f"{PEER}@s.whatsapp.net"
    assert message.from_ == f"{PEER}@s.whatsapp.net"  # the device part is dropped
    assert message.timestamp == SENT_AT
    assert message.push_name == "Ana"
    assert not message.from_me
    assert not message.is_group


def test_extended_text_keeps_quote_and_mentions() -> None:
    context = e2e.ContextInfo(
        stanzaID="3EB0QUOTED", participant=f"{PEER}@s.whatsapp.net", mentionedJID=["1555@lid"]
    )
    content = e2e.Message(
        extendedTextMessage=e2e.ExtendedTextMessage(text="see @1555", contextInfo=context)
    )
    message = received(content)
    assert (message.type, message.text) == (MessageKind.TEXT, "see @1555")
    assert message.quoted_message_id == "3EB0QUOTED"
    assert message.mentions == ["1555@lid"]


def test_group_message_names_group_and_participant() -> None:
    message = received(
        e2e.Message(conversation="hi all"),
        chat=jid("120363000000000001", "g.us"),
        sender=jid("15550001111"),
        from_me=True,
        is_group=True,
    )
    assert message.chat == "120363000000000001@g.us"
    assert message.from_ == "15550001111@s.whatsapp.net"
    assert message.is_group
    assert message.from_me


def test_image_with_caption() -> None:
    image = e2e.ImageMessage(
        caption="look", mimetype="image/jpeg", fileLength=2048, **media_fields()
    )
    message = received(e2e.Message(imageMessage=image))
    assert (message.type, message.text) == (MessageKind.IMAGE, "look")
    assert message.media is not None
    assert message.media.mimetype == "image/jpeg"
    assert message.media.size == 2048
    assert message.media.sha256 == FILE_HASH.hex()
    assert message.media.id is None  # the connector names it once stored


def test_video_and_round_video() -> None:
    video = e2e.VideoMessage(mimetype="video/mp4", seconds=12, caption="clip", **media_fields())
    message = received(e2e.Message(videoMessage=video))
    assert (message.type, message.text) == (MessageKind.VIDEO, "clip")
    assert message.media is not None
    assert message.media.seconds == 12
    round_video = received(e2e.Message(ptvMessage=e2e.VideoMessage(seconds=3, **media_fields())))
    assert round_video.type is MessageKind.VIDEO


@pytest.mark.parametrize("ptt", [True, False])
def test_audio_and_voice_note(ptt: bool) -> None:
    audio = e2e.AudioMessage(
        mimetype="audio/ogg; codecs=opus", seconds=7, PTT=ptt, **media_fields()
    )
    message = received(e2e.Message(audioMessage=audio))
    assert message.type is MessageKind.AUDIO
    assert message.media is not None
    assert (message.media.voice, message.media.seconds) == (ptt, 7)


def test_document_with_caption_wrapper() -> None:
    document = e2e.DocumentMessage(
        fileName="invoice.pdf", mimetype="application/pdf", caption="March", **media_fields()
    )
    wrapped = e2e.Message(
        documentWithCaptionMessage=e2e.FutureProofMessage(
            message=e2e.Message(documentMessage=document)
        )
    )
    message = received(wrapped)
    assert (message.type, message.text) == (MessageKind.DOCUMENT, "March")
    assert message.media is not None
    assert message.media.filename == "invoice.pdf"


def test_sticker() -> None:
    sticker = e2e.StickerMessage(mimetype="image/webp", isAnimated=True, **media_fields())
    message = received(e2e.Message(stickerMessage=sticker))
    assert message.type is MessageKind.STICKER
    assert message.media is not None
    assert message.media.mimetype == "image/webp"


def test_location_and_live_location() -> None:
    place = e2e.LocationMessage(
        degreesLatitude=52.52, degreesLongitude=13.405, name="Mitte", address="Berlin"
    )
    message = received(e2e.Message(locationMessage=place))
    assert message.type is MessageKind.LOCATION
    assert message.location is not None
    assert (message.location.latitude, message.location.longitude) == (52.52, 13.405)
    assert (message.location.name, message.location.address) == ("Mitte", "Berlin")
    live = e2e.LiveLocationMessage(degreesLatitude=1.5, degreesLongitude=-2.25, caption="here")
    moving = received(e2e.Message(liveLocationMessage=live))
    assert moving.location is not None
    assert moving.location.longitude == -2.25
    assert moving.text == "here"


def test_contact_and_contact_list() -> None:
    card = "BEGIN:VCARD\nVERSION:3.0\nFN:Bo\nEND:VCARD"
    single = received(e2e.Message(contactMessage=e2e.ContactMessage(displayName="Bo", vcard=card)))
    assert single.type is MessageKind.CONTACT
    assert single.contact is not None
    assert single.contact.vcard == card
    other = card.replace("Bo", "Cy")
    several = e2e.ContactsArrayMessage(
        displayName="2 contacts",
        contacts=[e2e.ContactMessage(vcard=card), e2e.ContactMessage(vcard=other)],
    )
    listed = received(e2e.Message(contactsArrayMessage=several))
    assert listed.contact is not None
    assert listed.contact.display_name == "2 contacts"
    assert listed.contact.vcard.count("BEGIN:VCARD") == 2


def test_reaction_and_its_removal() -> None:
    key = wa_common.MessageKey(remoteJID=f"{PEER}@s.whatsapp.net", fromMe=True, ID="3EB0TARGET")
    message = received(e2e.Message(reactionMessage=e2e.ReactionMessage(key=key, text="👍")))
    assert message.type is MessageKind.REACTION
    assert message.reaction is not None
    assert (message.reaction.target_message_id, message.reaction.emoji) == ("3EB0TARGET", "👍")
    assert message.target_message_id == "3EB0TARGET"
    removed = received(e2e.Message(reactionMessage=e2e.ReactionMessage(key=key, text="")))
    assert removed.reaction is not None
    assert removed.reaction.emoji == ""


def test_poll() -> None:
    options = [e2e.PollCreationMessage.Option(optionName=name) for name in ("tea", "coffee")]
    poll = e2e.PollCreationMessage(name="Drink?", options=options, selectableOptionsCount=1)
    for field in ("pollCreationMessage", "pollCreationMessageV3"):
        message = received(e2e.Message(**{field: poll}))
        assert message.type is MessageKind.POLL
        assert message.poll is not None
        assert message.poll.question == "Drink?"
        assert message.poll.options == ["tea", "coffee"]
        assert message.poll.selectable_count == 1


def test_edit_names_the_edited_message_and_its_new_text() -> None:
    edit = e2e.ProtocolMessage(
        key=wa_common.MessageKey(ID="3EB0ORIGINAL", fromMe=False),
        type=e2e.ProtocolMessage.MESSAGE_EDIT,
        editedMessage=e2e.Message(conversation="fixed typo"),
    )
    wrapped = e2e.Message(
        editedMessage=e2e.FutureProofMessage(message=e2e.Message(protocolMessage=edit))
    )
    for content in (wrapped, e2e.Message(protocolMessage=edit)):
        message = received(content)
        assert message.type is MessageKind.EDIT
        assert message.target_message_id == "3EB0ORIGINAL"
        assert message.text == "fixed typo"


def test_revoke_names_the_deleted_message() -> None:
    revoke = e2e.ProtocolMessage(
        key=wa_common.MessageKey(ID="3EB0GONE"), type=e2e.ProtocolMessage.REVOKE
    )
    message = received(e2e.Message(protocolMessage=revoke))
    assert message.type is MessageKind.REVOKE
    assert message.target_message_id == "3EB0GONE"


def test_ephemeral_and_view_once_are_unwrapped() -> None:
    inner = e2e.Message(imageMessage=e2e.ImageMessage(caption="once", **media_fields()))
    for field in ("ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2"):
        message = received(e2e.Message(**{field: e2e.FutureProofMessage(message=inner)}))
        assert (message.type, message.text) == (MessageKind.IMAGE, "once")


@pytest.mark.parametrize(
    "wrapper", ["viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension"]
)
def test_view_once_media_is_marked_view_once(wrapper: str) -> None:
    inner = e2e.Message(
        imageMessage=e2e.ImageMessage(caption="once", viewOnce=True, **media_fields())
    )
    message = received(e2e.Message(**{wrapper: e2e.FutureProofMessage(message=inner)}))
    assert message.view_once
    assert (message.type, message.text) == (MessageKind.IMAGE, "once")
    assert message.media is not None
    plain = received(e2e.Message(imageMessage=e2e.ImageMessage(caption="kept", **media_fields())))
    assert not plain.view_once  # the control


@pytest.mark.parametrize("part", ["imageMessage", "videoMessage", "audioMessage"])
def test_media_flagged_view_once_without_a_wrapper_is_view_once(part: str) -> None:
    kind = {"imageMessage": e2e.ImageMessage, "videoMessage": e2e.VideoMessage}.get(
        part, e2e.AudioMessage
    )
    flagged = e2e.Message(**{part: kind(viewOnce=True, **media_fields())})
    assert view_once(flagged)
    assert received(flagged).view_once
    assert not view_once(e2e.Message(**{part: kind(**media_fields())}))


def test_a_forwarded_message_is_marked_forwarded() -> None:
    forwarded = e2e.ContextInfo(isForwarded=True, forwardingScore=2)
    text = e2e.ExtendedTextMessage(text="passed on", contextInfo=forwarded)
    message = received(e2e.Message(extendedTextMessage=text))
    assert message.forwarded
    assert (message.type, message.text) == (MessageKind.TEXT, "passed on")
    image = e2e.ImageMessage(caption="seen it", contextInfo=forwarded, **media_fields())
    assert received(e2e.Message(imageMessage=image)).forwarded
    assert not received(e2e.Message(conversation="my own words")).forwarded  # the controls
    quote_only = e2e.ExtendedTextMessage(text="re", contextInfo=e2e.ContextInfo(stanzaID="3EB0Q"))
    assert not received(e2e.Message(extendedTextMessage=quote_only)).forwarded


def test_a_contacts_array_gives_each_card() -> None:
    bo = "BEGIN:VCARD\nVERSION:3.0\nFN:Bo\nTEL;waid=1555000111:+1555000111\nEND:VCARD"
    cy = bo.replace("Bo", "Cy").replace("1555000111", "1555000222")
    cards = e2e.ContactsArrayMessage(
        displayName="2 contacts",
        contacts=[
            e2e.ContactMessage(displayName="Bo", vcard=bo),
            e2e.ContactMessage(displayName="Cy", vcard=cy),
        ],
    )
    message = received(e2e.Message(contactsArrayMessage=cards))
    assert message.type is MessageKind.CONTACT
    assert [(card.display_name, card.vcard) for card in message.contacts] == [
        ("Bo", bo),
        ("Cy", cy),
    ]
    assert message.contact is not None
    assert message.contact.vcard == f"{bo}\n{cy}"
    single = received(e2e.Message(contactMessage=e2e.ContactMessage(displayName="Bo", vcard=bo)))
    assert [(card.display_name, card.vcard) for card in single.contacts] == [("Bo", bo)]
    assert single.contact == single.contacts[0]


@pytest.mark.parametrize("animated", [True, False])
def test_a_sticker_says_whether_it_is_animated(animated: bool) -> None:
    sticker = e2e.StickerMessage(mimetype="image/webp", isAnimated=animated, **media_fields())
    message = received(e2e.Message(stickerMessage=sticker))
    assert message.type is MessageKind.STICKER
    assert message.media is not None
    assert message.media.animated is animated


# -- polls: votes arrive encrypted, a poll's secret is remembered -----------------------------

POLL_SECRET = bytes(range(100, 132))
VOTE_IV = b"\x05" * 12
OWN_JID = f"{OWN}@s.whatsapp.net"
GROUP_JID = jid("120363000000000001", "g.us")


def vote_event(key: Any, payload: bytes = b"p" * 40, **source_options: Any) -> Any:
    update = e2e.PollUpdateMessage(
        pollCreationMessageKey=key,
        vote=e2e.PollEncValue(encPayload=payload, encIV=VOTE_IV),
        senderTimestampMS=SENT_AT_MS,
    )
    return message_event(
        e2e.Message(pollUpdateMessage=update), message_id="3EB0VOTE", **source_options
    )


@pytest.mark.parametrize(
    ("key", "source_options", "chat", "voter", "poll_sender"),
    [
        # one-to-one: the key names the poll from the voter's side, the chat is its author
        (
            wa_common.MessageKey(remoteJID=OWN_JID, fromMe=False, ID="3EB0POLL"),
            {},
            f"{PEER}@s.whatsapp.net",
            f"{PEER}@s.whatsapp.net",
            OWN_JID,
        ),
        (
            wa_common.MessageKey(remoteJID=f"{OWN}:12@lid", fromMe=False, ID="3EB0POLL"),
            {"chat": jid(PEER, "lid"), "sender": jid(PEER, "lid", device=2)},
            f"{PEER}@lid",
            f"{PEER}@lid",
            f"{OWN}@lid",
        ),
        # a group: the key's participant is the poll's author (a device part dropped)
        (
            wa_common.MessageKey(
                remoteJID="120363000000000001@g.us",
                fromMe=False,
                ID="3EB0POLL",
                participant=f"{OWN}:12@s.whatsapp.net",
            ),
            {"chat": GROUP_JID, "sender": jid("1555000111", device=4), "is_group": True},
            "120363000000000001@g.us",
            "1555000111@s.whatsapp.net",
            OWN_JID,
        ),
        # the voter's own poll: fromMe, so the voter is its author
        (
            wa_common.MessageKey(remoteJID="120363000000000001@g.us", fromMe=True, ID="3EB0POLL"),
            {"chat": GROUP_JID, "sender": jid("1555000111"), "is_group": True},
            "120363000000000001@g.us",
            "1555000111@s.whatsapp.net",
            "1555000111@s.whatsapp.net",
        ),
    ],
)
def test_a_poll_update_is_an_encrypted_vote(
    key: Any, source_options: dict[str, Any], chat: str, voter: str, poll_sender: str
) -> None:
    vote = poll_vote(vote_event(key, **source_options))
    assert vote == EncryptedVote(
        message_id="3EB0VOTE",
        chat=chat,
        voter=voter,
        poll_id="3EB0POLL",
        poll_sender=poll_sender,
        enc_payload=b"p" * 40,
        enc_iv=VOTE_IV,
        timestamp=SENT_AT,
    )


def test_a_mapped_vote_decrypts_with_the_polls_secret() -> None:
    """The fields the mapping reads are the ones the vote was sealed with."""
    chosen = [option_hash("tea"), option_hash("water")]
    voter = "1555000111@s.whatsapp.net"
    sealed = encrypt_vote(POLL_SECRET, "3EB0POLL", OWN_JID, voter, chosen, VOTE_IV)
    key = wa_common.MessageKey(
        remoteJID="120363000000000001@g.us", fromMe=False, ID="3EB0POLL", participant=OWN_JID
    )
    event = vote_event(
        key, sealed, chat=GROUP_JID, sender=jid("1555000111", device=7), is_group=True
    )
    vote = poll_vote(event)
    assert vote is not None
    opened = decrypt_vote(
        POLL_SECRET, vote.poll_id, vote.poll_sender, vote.voter, vote.enc_payload, vote.enc_iv
    )
    assert opened == chosen


def test_only_poll_updates_are_votes() -> None:
    assert poll_vote(message_event(e2e.Message(conversation="not a vote"))) is None
    options = [e2e.PollCreationMessage.Option(optionName="a")]
    poll = e2e.Message(pollCreationMessage=e2e.PollCreationMessage(name="Q?", options=options))
    assert poll_vote(message_event(poll)) is None
    key = wa_common.MessageKey(remoteJID=OWN_JID, fromMe=False, ID="3EB0POLL")
    assert poll_vote(vote_event(key)) is not None  # the control


@pytest.mark.parametrize("field", ["pollCreationMessage", "pollCreationMessageV3"])
def test_a_poll_is_remembered_with_its_secret(field: str) -> None:
    options = [e2e.PollCreationMessage.Option(optionName=name) for name in ("tea", "coffee")]
    poll = e2e.PollCreationMessage(name="Drink?", options=options, selectableOptionsCount=1)
    content = e2e.Message(
        **{field: poll}, messageContextInfo=e2e.MessageContextInfo(messageSecret=POLL_SECRET)
    )
    raw, secret = to_remember(message_event(content))
    assert secret == POLL_SECRET
    assert getattr(e2e.Message.FromString(raw), field) == poll


def test_a_wrapped_poll_is_remembered_with_the_outer_secret() -> None:
    options = [e2e.PollCreationMessage.Option(optionName="a")]
    poll = e2e.Message(pollCreationMessage=e2e.PollCreationMessage(name="Q?", options=options))
    wrapped = e2e.Message(
        ephemeralMessage=e2e.FutureProofMessage(message=poll),
        messageContextInfo=e2e.MessageContextInfo(messageSecret=POLL_SECRET),
    )
    raw, secret = to_remember(message_event(wrapped))
    assert secret == POLL_SECRET
    assert e2e.Message.FromString(raw) == poll


def test_other_messages_are_remembered_without_a_secret_and_out_of_their_wrappers() -> None:
    raw, secret = to_remember(message_event(e2e.Message(conversation="hello")))
    assert (e2e.Message.FromString(raw), secret) == (e2e.Message(conversation="hello"), None)
    inner = e2e.Message(
        imageMessage=e2e.ImageMessage(caption="once", viewOnce=True, **media_fields())
    )
    once = e2e.Message(viewOnceMessage=e2e.FutureProofMessage(message=inner))
    raw, secret = to_remember(message_event(once))
    assert (e2e.Message.FromString(raw), secret) == (inner, None)
    secretless = e2e.Message(pollCreationMessage=e2e.PollCreationMessage(name="Q?"))
    assert to_remember(message_event(secretless))[1] is None


def test_content_wabus_does_not_model_is_unknown() -> None:
    invite = e2e.GroupInviteMessage(groupJID="1203@g.us", inviteCode="abc", groupName="Team")
    message = received(e2e.Message(groupInviteMessage=invite))
    assert message.type is MessageKind.UNKNOWN
    assert message.text is None


def test_protocol_traffic_is_not_a_message() -> None:
    history = e2e.ProtocolMessage(type=e2e.ProtocolMessage.HISTORY_SYNC_NOTIFICATION)
    assert message_received(message_event(e2e.Message(protocolMessage=history))) is None
    keys_only = e2e.Message(
        senderKeyDistributionMessage=e2e.SenderKeyDistributionMessage(groupID="1203@g.us")
    )
    assert message_received(message_event(keys_only)) is None


def test_inbound_uses_the_whatsapp_id_as_source_id() -> None:
    mapped = inbound(message_event(e2e.Message(conversation="x"), message_id="3EB0SOURCE"))
    [(data, source_id)] = mapped
    assert isinstance(data, MessageReceived)
    assert source_id == "3EB0SOURCE"
    history = e2e.ProtocolMessage(type=e2e.ProtocolMessage.HISTORY_SYNC_NOTIFICATION)
    assert inbound(message_event(e2e.Message(protocolMessage=history))) == []


def test_downloadable_only_for_media_with_a_location() -> None:
    image = e2e.ImageMessage(fileLength=999, **media_fields())
    found = downloadable(message_event(e2e.Message(imageMessage=image)))
    assert found is not None
    message, size = found
    assert size == 999
    assert message.HasField("imageMessage")
    assert downloadable(message_event(e2e.Message(conversation="x"))) is None
    bare = e2e.Message(imageMessage=e2e.ImageMessage(caption="no path"))
    assert downloadable(message_event(bare)) is None


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("DELIVERED", ReceiptStatus.DELIVERED),
        ("READ", ReceiptStatus.READ),
        ("PLAYED", ReceiptStatus.PLAYED),
    ],
)
def test_receipts_from_the_other_side(kind: str, status: ReceiptStatus) -> None:
    mapped = receipt(receipt_event(kind, ["3EB0A", "3EB0B"]))
    assert isinstance(mapped, MessageReceipt)
    assert mapped.status is status
    assert mapped.message_ids == ["3EB0A", "3EB0B"]
    assert mapped.chat == mapped.from_ == f"{PEER}@s.whatsapp.net"
    assert mapped.timestamp == SENT_AT


@pytest.mark.parametrize("kind", ["READ_SELF", "PLAYED_SELF", "RETRY", "SERVER_ERROR", "SENDER"])
def test_other_receipts_are_not_events(kind: str) -> None:
    assert receipt(receipt_event(kind, ["3EB0A"])) is None


@pytest.mark.parametrize(
    ("state", "media", "expected"),
    [
        ("COMPOSING", "TEXT", "composing"),
        ("COMPOSING", "AUDIO", "recording"),
        ("PAUSED", "TEXT", "paused"),
    ],
)
def test_chat_presence(state: str, media: str, expected: str) -> None:
    event = presence_event(state, media)
    mapped = chat_presence(event)
    assert (mapped.state, mapped.chat) == (expected, f"{PEER}@s.whatsapp.net")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (nz.Disconnected(status=True), DisconnectReason.NETWORK),
        (nz.LoggedOut(OnConnect=True, Reason=2), DisconnectReason.LOGGED_OUT),
        (nz.StreamReplaced(), DisconnectReason.STREAM_REPLACED),
        (nz.TemporaryBan(Code=1, Expire=3600), DisconnectReason.TEMPORARY_BAN),
        (nz.ClientOutdated(), DisconnectReason.CLIENT_OUTDATED),
        (connect_failure("LOGGED_OUT"), DisconnectReason.LOGGED_OUT),
        (connect_failure("MAIN_DEVICE_GONE"), DisconnectReason.LOGGED_OUT),
        (connect_failure("UNKNOWN_LOGOUT"), DisconnectReason.LOGGED_OUT),
        (connect_failure("TEMP_BANNED"), DisconnectReason.TEMPORARY_BAN),
        (connect_failure("CLIENT_OUTDATED"), DisconnectReason.CLIENT_OUTDATED),
        (connect_failure("BAD_USER_AGENT"), DisconnectReason.CLIENT_OUTDATED),
        (connect_failure("SERVICE_UNAVAILABLE"), DisconnectReason.CONNECT_FAILED),
        (connect_failure("INTERNAL_SERVER_ERROR"), DisconnectReason.CONNECT_FAILED),
        (connect_failure("GENERIC"), DisconnectReason.CONNECT_FAILED),
        (connect_failure("EXPERIMENTAL"), DisconnectReason.CONNECT_FAILED),
        (nz.StreamError(Code="503", Raw=nz.Node(Tag="stream:error")), DisconnectReason.UNKNOWN),
    ],
)
def test_connection_events_become_reasons(event: Any, reason: DisconnectReason) -> None:
    mapped = close_reason(from_go(event), SENT_AT)
    assert mapped is not None
    assert mapped.reason is reason
    assert mapped.detail


def test_every_connect_failure_code_neonize_knows_has_a_reason() -> None:
    """A neonize upgrade that adds a failure code must make someone decide what it means."""
    for name, code in nz.ConnectFailureReason.items():
        mapped = close_reason(connect_failure(name), SENT_AT)
        assert mapped is not None
        assert code in CONNECT_FAILURES, name
        assert name in mapped.detail
    # whatsmeow's own notion of a logout (ConnectFailureReason.IsLoggedOut: 401, 403, 406)
    logged_out = {
        name
        for name, code in nz.ConnectFailureReason.items()
        if CONNECT_FAILURES[code].wipes_session
    }
    assert logged_out == {"LOGGED_OUT", "MAIN_DEVICE_GONE", "UNKNOWN_LOGOUT"}


def test_a_temporary_ban_carries_its_end_as_a_time() -> None:
    mapped = close_reason(from_go(nz.TemporaryBan(Code=1, Expire=3600)), SENT_AT)
    assert mapped is not None
    assert mapped.reason.is_penalty
    assert mapped.not_before == SENT_AT + timedelta(hours=1)
    assert "SEND_TO_TOO_MANY_PEOPLE" in mapped.detail
    assert (SENT_AT + timedelta(hours=1)).isoformat(timespec="seconds") in mapped.detail


def test_a_temporary_ban_without_an_end_carries_none() -> None:
    mapped = close_reason(from_go(nz.TemporaryBan(Code=4, Expire=0)), SENT_AT)
    assert mapped is not None
    assert (mapped.reason, mapped.not_before) == (DisconnectReason.TEMPORARY_BAN, None)
    assert "SENT_TOO_MANY_SAME_MESSAGE" in mapped.detail


def test_only_connection_events_carry_an_earliest_retry() -> None:
    for event in (nz.Disconnected(status=True), nz.StreamReplaced(), connect_failure("GENERIC")):
        mapped = close_reason(from_go(event), SENT_AT)
        assert mapped is not None
        assert mapped.not_before is None


def test_non_closing_events_have_no_reason() -> None:
    assert close_reason(nz.Connected(status=True), SENT_AT) is None
    assert close_reason(nz.KeepAliveTimeout(ErrorCount=1), SENT_AT) is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            "failed to dial whatsapp web websocket: failed to WebSocket dial: failed to send "
            'handshake request: Get "https://web.whatsapp.com/ws/chat": dial tcp: lookup '
            "web.whatsapp.com: no such host",
            DisconnectReason.NETWORK,
        ),
        (
            "noise handshake failed: timed out waiting for handshake response",
            DisconnectReason.NETWORK,
        ),
        (
            "failed to upgrade database: pq: SSL is not enabled on the server",
            DisconnectReason.UNKNOWN,
        ),
        # codes decide what WhatsApp refused: a number in an error text means nothing
        ("client outdated (405)", DisconnectReason.UNKNOWN),
        ("pairing process exited with code -9", DisconnectReason.UNKNOWN),
    ],
)
def test_connect_errors_without_a_code_fall_back_to_whatsmeows_messages(
    error: str, reason: DisconnectReason
) -> None:
    assert connect_error_reason(error) is reason


@pytest.mark.parametrize(
    ("error", "not_sent"),
    [
        ("websocket not connected", True),
        ("failed to get device list: websocket not connected", True),
        ("the store doesn't contain a device JID", True),
        ("client is nil", True),
        ("timed out waiting for message send response", False),
        ("info query timed out", False),
        ("server returned error 479", False),
    ],
)
def test_a_failed_send_is_retryable_only_when_whatsmeow_says_nothing_left(
    error: str, not_sent: bool
) -> None:
    assert surely_not_sent(error) is not_sent


def test_qr_channel_results() -> None:
    assert login_status_reason("success") is None
    exhausted = login_status_reason("timeout")
    assert exhausted is not None
    assert exhausted.reason is DisconnectReason.QR_EXHAUSTED
    outdated = login_status_reason("err-client-outdated")
    assert outdated is not None
    assert outdated.reason is DisconnectReason.CLIENT_OUTDATED
    other = login_status_reason("err-scanned-without-multidevice")
    assert other is not None
    assert other.reason is DisconnectReason.UNKNOWN


def test_qr_lifetimes_follow_whatsmeow() -> None:
    assert qr_expires_at(0, SENT_AT) == SENT_AT + timedelta(seconds=60)
    assert qr_expires_at(3, SENT_AT) == SENT_AT + timedelta(seconds=20)


def test_times_in_seconds_and_milliseconds() -> None:
    assert from_unix(SENT_AT_MS) == SENT_AT
    assert from_unix(int(SENT_AT.timestamp())) == SENT_AT


@pytest.mark.parametrize(
    "text", ["15550009999:12@s.whatsapp.net", "15550009999.1:3@s.whatsapp.net", "1555@lid"]
)
def test_device_jids_read_back_as_written(text: str) -> None:
    parsed = parse_device_jid(text)
    assert device_jid_str(from_go(parsed)) == text
    assert device_jid_str(jid("15550009999", device=12)) == "15550009999:12@s.whatsapp.net"


# -- from_alt: the sender's other address --------------------------------------------------


def with_sender_alt(event: Any, alt: Any) -> Any:
    event.Info.MessageSource.SenderAlt.CopyFrom(alt)
    return from_go(event)


@pytest.mark.parametrize(
    ("sender", "alt", "expected"),
    [
        (jid(PEER, device=3), jid("77665544332211", "lid", device=3), "77665544332211@lid"),
        (jid("77665544332211", "lid"), jid(PEER), f"{PEER}@s.whatsapp.net"),
        (jid(PEER, device=3), jid(), None),  # whatsmeow did not say
        (jid(PEER, device=3), jid("", ""), None),  # Go's empty JID
    ],
)
def test_from_alt_is_the_senders_other_address_when_whatsapp_said_it(
    sender: Any, alt: Any, expected: str | None
) -> None:
    event = with_sender_alt(message_event(e2e.Message(conversation="x"), sender=sender), alt)
    message = message_received(event)
    assert message is not None
    assert message.from_alt == expected
    assert message.from_ == jid_str(sender)  # the control: `from` stays the sender


# -- groups ----------------------------------------------------------------------------------

GROUP = "120363000000000001@g.us"
GO_ZERO_TIME = -62135596800
"""What Go's zero `time.Time` is in Unix seconds, as neonize sends it for "no time"."""
OWN_LID = "99887766554433"
MEMBER = "1555000111"
ANOTHER = "1555000222"


def group_event(**fields: Any) -> Any:
    """A neonize `GroupInfoEv` as neonize's `EncodeGroupInfoEvent` fills it."""
    return from_go(
        nz.GroupInfoEvent(
            JID=jid("120363000000000001", "g.us"),
            Notify="",
            Timestamp=int(SENT_AT.timestamp()),
            PrevParticipantsVersionID="",
            ParticipantVersionID="",
            JoinReason="",
            **fields,
        )
    )


def group_name(name: str) -> Any:
    return nz.GroupName(Name=name, NameSetAt=int(SENT_AT.timestamp()), NameSetBy=jid(PEER))


def group_topic(text: str, *, deleted: bool = False) -> Any:
    return nz.GroupTopic(
        Topic=text,
        TopicID="3EB0TOPIC",
        TopicSetAt=int(SENT_AT.timestamp()),
        TopicSetBy=jid(PEER),
        TopicDeleted=deleted,
    )


def test_group_participant_changes_are_one_event_per_action() -> None:
    event = group_event(
        Sender=jid(PEER),
        Join=[jid(MEMBER), jid("44332211", "lid")],
        Leave=[jid(ANOTHER)],
        Promote=[jid(MEMBER)],
    )
    assert group_changes(event) == [
        GroupParticipantsChanged(
            group=GROUP,
            action="add",
            participants=[f"{MEMBER}@s.whatsapp.net", "44332211@lid"],
            by=f"{PEER}@s.whatsapp.net",
        ),
        GroupParticipantsChanged(
            group=GROUP,
            action="remove",
            participants=[f"{ANOTHER}@s.whatsapp.net"],
            by=f"{PEER}@s.whatsapp.net",
        ),
        GroupParticipantsChanged(
            group=GROUP,
            action="promote",
            participants=[f"{MEMBER}@s.whatsapp.net"],
            by=f"{PEER}@s.whatsapp.net",
        ),
    ]
    demoted = group_changes(group_event(Demote=[jid(MEMBER)]))  # no sender: by is unknown
    assert demoted == [
        GroupParticipantsChanged(
            group=GROUP, action="demote", participants=[f"{MEMBER}@s.whatsapp.net"]
        )
    ]


OWN_ADDRESSES = frozenset({f"{OWN}@s.whatsapp.net", f"{OWN_LID}@lid"})


@pytest.mark.parametrize("own", [jid(OWN), jid(OWN_LID, "lid")])
def test_the_account_added_is_group_joined_and_the_others_participants(own: Any) -> None:
    event = group_event(Sender=jid(PEER), Join=[own, jid(MEMBER)], Name=group_name("Team"))
    joined, added, settings = group_changes(event, OWN_ADDRESSES)
    by = f"{PEER}@s.whatsapp.net"
    assert joined == GroupJoined(group=GROUP, name="Team", by=by)
    assert added == GroupParticipantsChanged(
        group=GROUP, action="add", participants=[f"{MEMBER}@s.whatsapp.net"], by=by
    )
    assert settings == GroupSettingsChanged(group=GROUP, by=by, name="Team")
    alone = group_changes(group_event(Join=[own]), OWN_ADDRESSES)
    assert alone == [GroupJoined(group=GROUP)]  # nobody else: no participants event
    # the control: without the account's addresses it is one of the participants
    [unknown_us] = group_changes(group_event(Join=[own]))
    assert isinstance(unknown_us, GroupParticipantsChanged)
    assert unknown_us.participants == [jid_str(own)]


@pytest.mark.parametrize("own", [jid(OWN, device=12), jid(OWN_LID, "lid")])
def test_the_account_removed_is_group_left_after_the_others(own: Any) -> None:
    event = group_event(Sender=jid(PEER), Leave=[jid(MEMBER), own])
    removed, left = group_changes(event, OWN_ADDRESSES)
    by = f"{PEER}@s.whatsapp.net"
    assert removed == GroupParticipantsChanged(
        group=GROUP, action="remove", participants=[f"{MEMBER}@s.whatsapp.net"], by=by
    )
    assert left == GroupLeft(group=GROUP, by=by)
    # promoted or demoted, the account is a participant like any other
    [promoted] = group_changes(group_event(Promote=[own]), OWN_ADDRESSES)
    assert promoted == GroupParticipantsChanged(
        group=GROUP, action="promote", participants=[jid_str(own)]
    )


def test_a_deleted_group_is_left_once() -> None:
    deleted = nz.GroupDelete(Deleted=True, DeletedReason="")
    assert group_changes(group_event(Sender=jid(PEER), Delete=deleted)) == [
        GroupLeft(group=GROUP, by=f"{PEER}@s.whatsapp.net")
    ]
    both = group_event(Leave=[jid(OWN)], Delete=deleted)
    assert group_changes(both, OWN_ADDRESSES) == [GroupLeft(group=GROUP)]


@pytest.mark.parametrize(
    ("fields", "changed"),
    [
        ({"Name": group_name("New name")}, {"name": "New name"}),
        ({"Topic": group_topic("Rules: be kind")}, {"description": "Rules: be kind"}),
        ({"Topic": group_topic("", deleted=True)}, {"description": ""}),
        (
            {"Announce": nz.GroupAnnounce(IsAnnounce=True, AnnounceVersionID="1")},
            {"announce": True},
        ),
        (
            {"Announce": nz.GroupAnnounce(IsAnnounce=False, AnnounceVersionID="2")},
            {"announce": False},
        ),
        ({"Locked": nz.GroupLocked(isLocked=True)}, {"locked": True}),
        ({"Locked": nz.GroupLocked(isLocked=False)}, {"locked": False}),
        (
            {"Name": group_name("Both"), "Locked": nz.GroupLocked(isLocked=True)},
            {"name": "Both", "locked": True},
        ),
    ],
)
def test_group_settings_carry_only_what_changed(
    fields: dict[str, Any], changed: dict[str, Any]
) -> None:
    [settings] = group_changes(group_event(Sender=jid(PEER), **fields))
    assert isinstance(settings, GroupSettingsChanged)
    unchanged = {"name": None, "description": None, "announce": None, "locked": None}
    assert settings.model_dump(include=set(unchanged)) == unchanged | changed
    assert (settings.group, settings.by) == (GROUP, f"{PEER}@s.whatsapp.net")
    assert group_settings(group_event(**fields)) == changed


def test_group_changes_wabus_does_not_model_are_no_events() -> None:
    ephemeral = nz.GroupEphemeral(IsEphemeral=True, DisappearingTimer=86400)
    assert group_changes(group_event(Ephemeral=ephemeral)) == []
    assert group_changes(group_event(NewInviteLink="https://chat.whatsapp.com/AbCdEfGhIj1")) == []
    assert inbound(group_event(Ephemeral=ephemeral)) == []


def group_info_proto(name: str = "Team", created: int = int(SENT_AT.timestamp())) -> Any:
    """A neonize `GroupInfo` as neonize's `EncodeGroupInfo` fills it."""
    return nz.GroupInfo(
        OwnerJID=jid(PEER),
        JID=jid("120363000000000001", "g.us"),
        OwnerPN=jid(PEER),
        GroupName=group_name(name),
        GroupTopic=nz.GroupTopic(
            Topic="",
            TopicID="",
            TopicSetAt=GO_ZERO_TIME,
            TopicSetBy=jid("", ""),
            TopicDeleted=False,
        ),
        GroupLocked=nz.GroupLocked(isLocked=False),
        GroupAnnounce=nz.GroupAnnounce(IsAnnounce=False, AnnounceVersionID=""),
        GroupEphemeral=nz.GroupEphemeral(IsEphemeral=False, DisappearingTimer=0),
        GroupIncognito=nz.GroupIncognito(IsIncognito=False),
        GroupParent=nz.GroupParent(IsParent=False, DefaultMembershipApprovalMode=""),
        GroupLinkedParent=nz.GroupLinkedParent(LinkedParentJID=jid("", "")),
        GroupIsDefaultSub=nz.GroupIsDefaultSub(IsDefaultSubGroup=False),
        GroupCreated=float(created),
        ParticipantVersionID="",
    )


def joined_event(name: str = "Team", sender: Any = None) -> Any:
    event = nz.JoinedGroup(Reason="", Type="", CreateKey="", GroupInfo=group_info_proto(name))
    if sender is not None:
        event.Sender.CopyFrom(sender)
    return from_go(event)


def test_a_joined_group_event_is_group_joined() -> None:
    assert joined_group(joined_event()) == GroupJoined(group=GROUP, name="Team")
    assert joined_group(joined_event("")) == GroupJoined(group=GROUP)
    by = joined_group(joined_event(sender=jid(PEER, device=2)))  # a neonize that passes it on
    assert by.by == f"{PEER}@s.whatsapp.net"
    assert inbound(joined_event()) == [(GroupJoined(group=GROUP, name="Team"), None)]


# -- presence of subscribed contacts ---------------------------------------------------------


def presence_of(unavailable: bool, last_seen: int) -> Any:
    return from_go(nz.Presence(From=jid(PEER), Unavailable=unavailable, LastSeen=last_seen))


@pytest.mark.parametrize(
    ("unavailable", "last_seen", "expected"),
    [
        (False, GO_ZERO_TIME, PresenceUpdate(jid=f"{PEER}@s.whatsapp.net", online=True)),
        (
            True,
            int(SENT_AT.timestamp()),
            PresenceUpdate(jid=f"{PEER}@s.whatsapp.net", online=False, last_seen=SENT_AT),
        ),
        # offline, last seen hidden: Go's zero time
        (True, GO_ZERO_TIME, PresenceUpdate(jid=f"{PEER}@s.whatsapp.net", online=False)),
        (True, 0, PresenceUpdate(jid=f"{PEER}@s.whatsapp.net", online=False)),
    ],
)
def test_presence_is_online_or_offline_with_last_seen(
    unavailable: bool, last_seen: int, expected: PresenceUpdate
) -> None:
    assert presence_update(presence_of(unavailable, last_seen)) == expected
    assert inbound(presence_of(unavailable, last_seen)) == [(expected, None)]


# -- calls -----------------------------------------------------------------------------------

CALL_ID = "AB12CD34EF56AB12CD34EF56AB12CD34"


def node(tag: str, attrs: dict[str, Any] | None = None, children: list[Any] | None = None) -> Any:
    """A neonize `Node` as `EncodeNode` writes whatsmeow's: text and JID attributes."""
    encoded = [
        nz.NodeAttrs(name=name, jid=value)
        if isinstance(value, nz.JID)
        else nz.NodeAttrs(name=name, text=value)
        for name, value in (attrs or {}).items()
    ]
    return nz.Node(Tag=tag, Attrs=encoded, Nodes=children or [], Nil=not children)


def call_meta(creator: Any = None, sender: Any = None) -> Any:
    return nz.BasicCallMeta(
        **{"from": sender if sender is not None else jid(PEER, device=4)},
        timestamp=int(SENT_AT.timestamp()),
        callCreator=creator if creator is not None else jid(PEER, device=4),
        callCreatorAlt=jid("", ""),
        callID=CALL_ID,
    )


def offer_event(children: list[str], attrs: dict[str, Any] | None = None, **meta: Any) -> Any:
    offer = node(
        "offer",
        {"call-id": CALL_ID, "call-creator": jid(PEER, device=4), **(attrs or {})},
        [node(child) for child in children],
    )
    remote = nz.CallRemoteMeta(remotePlatform="android", remoteVersion="2.25.1")
    return from_go(nz.CallOffer(basicCallMeta=call_meta(**meta), callRemoteMeta=remote, data=offer))


@pytest.mark.parametrize(
    ("children", "attrs", "video", "group"),
    [
        (["audio", "audio", "net", "encopt"], {}, False, False),
        (["audio", "video", "net"], {}, True, False),
        (["audio"], {"group-jid": jid("120363000000000001", "g.us")}, False, True),
        (["audio", "video"], {"type": "group"}, True, True),
        (["audio", "group_info"], {}, False, True),
        (["audio"], {"type": "normal"}, False, False),
    ],
)
def test_a_call_offer_reads_video_and_group_from_the_offer(
    children: list[str], attrs: dict[str, Any], video: bool, group: bool
) -> None:
    offered = call_offered(offer_event(children, attrs))
    assert offered == CallOffered(
        call_id=CALL_ID,
        from_=f"{PEER}@s.whatsapp.net",
        video=video,
        group=group,
        timestamp=SENT_AT,
    )
    assert not offered.rejected  # the connector decides that


def test_the_caller_is_the_call_creator_else_the_sender() -> None:
    lid_caller = call_offered(offer_event(["audio"], creator=jid("4433", "lid", device=1)))
    assert lid_caller.from_ == "4433@lid"
    no_creator = call_offered(offer_event(["audio"], creator=jid("", ""), sender=jid(MEMBER)))
    assert no_creator.from_ == f"{MEMBER}@s.whatsapp.net"


def test_a_group_call_notice_is_a_call_offer() -> None:
    notice = from_go(
        nz.CallOfferNotice(
            basicCallMeta=call_meta(),
            media="video",
            type="group",
            data=node("offer_notice", {"media": "video", "type": "group"}),
        )
    )
    assert call_offer_notice(notice) == CallOffered(
        call_id=CALL_ID, from_=f"{PEER}@s.whatsapp.net", video=True, group=True, timestamp=SENT_AT
    )
    audio = nz.CallOfferNotice(
        basicCallMeta=call_meta(), media="audio", type="", data=node("offer_notice")
    )
    assert (call_offer_notice(from_go(audio)).video, call_offer_notice(from_go(audio)).group) == (
        False,
        False,
    )


@pytest.mark.parametrize(("reason", "expected"), [("timeout", "timeout"), ("", None)])
def test_a_terminated_call_is_call_ended_with_its_reason(reason: str, expected: str | None) -> None:
    event = from_go(
        nz.CallTerminate(basicCallMeta=call_meta(), reason=reason, data=node("terminate"))
    )
    ended = call_ended(event)
    assert ended == CallEnded(
        call_id=CALL_ID, from_=f"{PEER}@s.whatsapp.net", reason=expected, timestamp=SENT_AT
    )
    assert inbound(event) == [(ended, CALL_ID)]


def test_call_events_use_the_call_id_as_source_id() -> None:
    [(offered, source_id)] = inbound(offer_event(["audio"]))
    assert isinstance(offered, CallOffered)
    assert source_id == CALL_ID
    [(changed, no_source)] = inbound(group_event(Locked=nz.GroupLocked(isLocked=True)))
    assert isinstance(changed, GroupSettingsChanged)
    assert no_source is None
