"""Send commands as neonize protobufs: pure builders, plus the one I/O step they need — getting
the bytes of media to send (inline base64, or a URL fetched through the SSRF guard, size-capped).

wabus builds the waE2E messages itself instead of calling neonize's `build_*_message` helpers:
those fetch URLs on their own (no SSRF guard, no size cap), need ffmpeg for audio and video, and
parse mentions out of the text; here every field comes from the validated command.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import aiohttp
import magic

from connector.engine import SendError
from connector.engines.neonize_lib import (
    ChatPresence,
    ChatPresenceMedia,
    MediaType,
    e2e,
    nz,
    wa_common,
)
from schemas.commands import (
    MAX_MEDIA_BYTES,
    Presence,
    SendAudio,
    SendDocument,
    SendImage,
    SendLocation,
    SendMessage,
    SendReaction,
    SendText,
    SendVideo,
)
from wabus.ssrf import BlockedTarget, Network, check_url, guarded_connector

SendMedia = SendImage | SendVideo | SendAudio | SendDocument

USER_SERVER = "s.whatsapp.net"
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)

_DEFAULT_MIMETYPE = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/ogg; codecs=opus",
    "document": "application/octet-stream",
}
_MEDIA_TYPE = {
    "image": MediaType.MediaImage,
    "video": MediaType.MediaVideo,
    "audio": MediaType.MediaAudio,
    "document": MediaType.MediaDocument,
}


def jid_string(address: str) -> str:
    """A JID for a phone number (digits) or a JID as given."""
    return address if "@" in address else f"{address}@{USER_SERVER}"


def to_jid(address: str) -> Any:
    """A neonize `JID` for a phone number (digits) or a JID string."""
    user, _, server = jid_string(address).partition("@")
    return nz.JID(User=user, Server=server, Device=0, RawAgent=0, Integrator=0, IsEmpty=False)


def context_info(message: SendMessage) -> Any | None:
    """The ContextInfo carrying a quote (`reply_to`) and mentions; None when there is neither.

    The quote names the quoted message by id only: wabus keeps no copy of past messages to put
    in `quotedMessage`."""
    if message.reply_to is None and not message.mentions:
        return None
    context = e2e.ContextInfo(mentionedJID=[jid_string(item) for item in message.mentions])
    if message.reply_to is not None:
        context.stanzaID = message.reply_to
    return context


def build_text(message: SendText) -> Any:
    """A plain `conversation`, or an `extendedTextMessage` when it quotes or mentions."""
    context = context_info(message)
    if context is None:
        return e2e.Message(conversation=message.text)
    return e2e.Message(
        extendedTextMessage=e2e.ExtendedTextMessage(text=message.text, contextInfo=context)
    )


def build_location(message: SendLocation) -> Any:
    location = e2e.LocationMessage(
        degreesLatitude=message.latitude, degreesLongitude=message.longitude
    )
    if message.name is not None:
        location.name = message.name
    if message.address is not None:
        location.address = message.address
    context = context_info(message)
    if context is not None:
        location.contextInfo.CopyFrom(context)
    return e2e.Message(locationMessage=location)


def build_reaction(message: SendReaction, now_ms: int) -> Any:
    """A reaction to `message_id` in chat `to`; an empty emoji takes the reaction back."""
    key = wa_common.MessageKey(
        remoteJID=jid_string(message.to), fromMe=message.from_me, ID=message.message_id
    )
    return e2e.Message(
        reactionMessage=e2e.ReactionMessage(key=key, text=message.emoji, senderTimestampMS=now_ms)
    )


def media_type(message: SendMedia) -> Any:
    """neonize's `MediaType` to upload this kind of media with (it picks the encryption keys)."""
    return _MEDIA_TYPE[message.type]


def _opus(mimetype: str) -> str:
    """WhatsApp plays Ogg audio (voice notes above all) only when told the codec."""
    return _DEFAULT_MIMETYPE["audio"] if mimetype == "audio/ogg" else mimetype


def mimetype_of(message: SendMedia, data: bytes) -> str:
    """The declared mimetype, else what the bytes look like, else the kind's usual type."""
    if message.mimetype:
        return message.mimetype
    sniffed = magic.from_buffer(data[:4096], mime=True)
    if sniffed and sniffed not in {"application/octet-stream", "text/plain"}:
        return _opus(sniffed)
    return _DEFAULT_MIMETYPE[message.type]


def build_media(message: SendMedia, upload: Any, mimetype: str) -> Any:
    """The image/video/audio/document message for media already uploaded (`UploadResponse`)."""
    common: dict[str, Any] = {
        "URL": upload.url,
        "directPath": upload.DirectPath,
        "mediaKey": upload.MediaKey,
        "fileEncSHA256": upload.FileEncSHA256,
        "fileSHA256": upload.FileSHA256,
        "fileLength": upload.FileLength,
        "mimetype": mimetype,
    }
    context = context_info(message)
    if context is not None:
        common["contextInfo"] = context
    if isinstance(message, SendImage):
        return e2e.Message(imageMessage=e2e.ImageMessage(caption=message.caption, **common))
    if isinstance(message, SendVideo):
        return e2e.Message(videoMessage=e2e.VideoMessage(caption=message.caption, **common))
    if isinstance(message, SendAudio):
        return e2e.Message(audioMessage=e2e.AudioMessage(PTT=message.voice, **common))
    document = e2e.DocumentMessage(
        caption=message.caption,
        fileName=message.filename or "file",
        title=message.filename or "file",
        **common,
    )
    return e2e.Message(documentMessage=document)


def chat_presence(request: Presence) -> tuple[Any, Any]:
    """neonize's (state, media) pair for typing, recording or pausing in a chat."""
    if request.state == "paused":
        return ChatPresence.CHAT_PRESENCE_PAUSED, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT
    if request.state == "recording":
        return ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO
    return ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT


def decode_base64(value: str, limit: int = MAX_MEDIA_BYTES) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise SendError("invalid_media", "`base64` is not valid base64") from error
    if len(data) > limit:
        raise SendError("media_too_large", f"media is larger than {limit} bytes")
    if not data:
        raise SendError("invalid_media", "`base64` decodes to no bytes")
    return data


async def fetch_media(
    url: str, allow: Sequence[Network] = (), limit: int = MAX_MEDIA_BYTES
) -> tuple[bytes, str | None]:
    """GET `url` through the SSRF guard, refusing more than `limit` bytes; returns the bytes and
    the response's content type. Redirects are not followed (their target would escape the
    IP-literal check). Failures are `SendError`s: `media_blocked`, `media_too_large`,
    `media_fetch_failed` (retryable for 5xx and network errors)."""
    try:
        check_url(url, allow)
        async with (
            aiohttp.ClientSession(
                connector=guarded_connector(allow), timeout=FETCH_TIMEOUT
            ) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise SendError(
                    "media_fetch_failed",
                    f"media URL answered HTTP {response.status}",
                    retryable=response.status >= 500,
                )
            if (response.content_length or 0) > limit:
                raise SendError("media_too_large", f"media is larger than {limit} bytes")
            data = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > limit:
                    raise SendError("media_too_large", f"media is larger than {limit} bytes")
            content_type = response.headers.get("Content-Type")
    except BlockedTarget as error:
        raise SendError("media_blocked", error.reason) from error
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, BlockedTarget):
            raise SendError("media_blocked", error.os_error.reason) from error
        raise SendError("media_fetch_failed", str(error), retryable=True) from error
    except (aiohttp.ClientError, TimeoutError) as error:
        raise SendError("media_fetch_failed", str(error) or "timed out", retryable=True) from error
    if not data:
        raise SendError("invalid_media", "media URL answered with no bytes")
    return bytes(data), content_type


async def load_media(
    message: SendMedia, allow: Sequence[Network] = (), limit: int = MAX_MEDIA_BYTES
) -> tuple[bytes, str]:
    """The bytes to upload for a media send and their mimetype."""
    if message.base64 is not None:
        data = decode_base64(message.base64, limit)
        return data, mimetype_of(message, data)
    assert message.url is not None  # the model requires exactly one source
    data, content_type = await fetch_media(message.url, allow, limit)
    if message.mimetype is None and content_type:
        declared = content_type.split(";", 1)[0].strip().lower()
        if declared and declared not in {"application/octet-stream", "binary/octet-stream"}:
            return data, _opus(declared)
    return data, mimetype_of(message, data)
