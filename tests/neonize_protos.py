"""neonize events as Go sends them: real neonize protobufs with every field the Go side always
fills (the schema marks them required), serialised and parsed back like on the way from Go."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.engines.neonize_lib import nz

SENT_AT = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
SENT_AT_MS = int(SENT_AT.timestamp() * 1000)
PEER = "4915112345678"
OWN = "15550009999"


def from_go(message: Any) -> Any:
    """What neonize hands a handler: the protobuf parsed from the bytes Go sent."""
    return type(message).FromString(message.SerializeToString())


def jid(user: str = "", server: str = "s.whatsapp.net", device: int = 0) -> Any:
    return nz.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0)


def source(
    chat: Any = None, sender: Any = None, *, from_me: bool = False, is_group: bool = False
) -> Any:
    return nz.MessageSource(
        Chat=chat if chat is not None else jid(PEER),
        Sender=sender if sender is not None else jid(PEER, device=3),
        IsFromMe=from_me,
        IsGroup=is_group,
        SenderAlt=jid(),
        RecipientAlt=jid(),
        BroadcastListOwner=jid(),
    )


def message_event(
    content: Any, *, message_id: str = "3EB0AAAABBBBCCCCDDDD01", **source_options: Any
) -> Any:
    """A neonize `MessageEv` carrying waE2E `content`."""
    info = nz.MessageInfo(
        MessageSource=source(**source_options),
        ID=message_id,
        ServerID=0,
        Type="text",
        Pushname="Ana",
        Timestamp=SENT_AT_MS,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
    )
    return from_go(
        nz.Message(
            Info=info,
            Message=content,
            IsEphemeral=False,
            IsViewOnce=False,
            IsViewOnceV2=False,
            IsViewOnceV2Extension=False,
            IsDocumentWithCaption=False,
            IsLottieSticker=False,
            IsEdit=False,
            UnavailableRequestID="",
            RetryCount=0,
        )
    )


def receipt_event(kind: str, ids: list[str]) -> Any:
    return from_go(
        nz.Receipt(
            MessageSource=source(jid(PEER), jid(PEER, device=1)),
            MessageIDs=ids,
            Timestamp=int(SENT_AT.timestamp()),
            Type=nz.Receipt.ReceiptType.Value(kind),
        )
    )


def presence_event(state: str, media: str) -> Any:
    return from_go(
        nz.ChatPresence(
            MessageSource=source(jid(PEER), jid(PEER)),
            State=nz.ChatPresence.ChatPresence.Value(state),
            Media=nz.ChatPresence.ChatPresenceMedia.Value(media),
        )
    )


def connect_failure(reason: str) -> Any:
    return from_go(
        nz.ConnectFailure(
            Reason=nz.ConnectFailureReason.Value(reason),
            Message="x",
            Raw=nz.Node(Tag="failure"),
        )
    )


def device(user: str = OWN, push_name: str = "Shop") -> Any:
    """The `Device` neonize sends first when its event loop starts (the client's `me`)."""
    return from_go(
        nz.Device(
            JID=jid(user, device=12),
            Platform="chrome",
            BussinessName="",
            PushName=push_name,
            Initialized=True,
        )
    )
