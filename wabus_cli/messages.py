"""`wabus send`'s options, as the JSON message the relay takes: a pure function, so every
combination is checked from a table, and the relay stays the one judge of what is valid."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.commands import MAX_MEDIA_BYTES


class UsageError(ValueError):
    """Options that make no message; the text says which and what to do."""


@dataclass(frozen=True)
class SendOptions:
    text: str | None = None
    poll: list[str] = field(default_factory=list)
    choices: int = 1
    image: Path | None = None
    video: Path | None = None
    document: Path | None = None
    audio: Path | None = None
    voice: Path | None = None
    sticker: Path | None = None
    contact: list[str] = field(default_factory=list)
    react: str | None = None
    edit: str | None = None
    delete: str | None = None
    forward: str | None = None
    reply_to: str | None = None
    link_preview: bool = False
    view_once: bool = False


def _media(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error
    if size > MAX_MEDIA_BYTES:
        raise UsageError(f"{path} is {size} bytes; media is at most {MAX_MEDIA_BYTES} bytes")
    return base64.b64encode(path.read_bytes()).decode()


def _contact(value: str) -> dict[str, Any]:
    name, sep, phones = value.partition(":")
    if not sep or not name.strip() or not phones.strip():
        raise UsageError(f"--contact takes NAME:PHONE[,PHONE…], got {value!r}")
    return {"name": name.strip(), "phones": [p.strip() for p in phones.split(",") if p.strip()]}


def build_message(to: str, options: SendOptions) -> dict[str, Any]:
    """The message for `wabus send INSTANCE TO [TEXT] [options]`; raises `UsageError`."""
    o = options
    files = {
        "image": o.image,
        "video": o.video,
        "document": o.document,
        "audio": o.audio,
        "voice": o.voice,
        "sticker": o.sticker,
    }
    kinds = [name for name, path in files.items() if path is not None]
    kinds += [
        name
        for name, given in (
            ("poll", bool(o.poll)),
            ("contact", bool(o.contact)),
            ("react", o.react is not None),
            ("edit", o.edit is not None),
            ("delete", o.delete is not None),
            ("forward", o.forward is not None),
        )
        if given
    ]
    if len(kinds) > 1:
        raise UsageError(f"one kind of message at a time, got --{' and --'.join(kinds)}")
    kind = kinds[0] if kinds else "text"
    message: dict[str, Any] = {"to": to}
    if o.reply_to is not None:
        message["reply_to"] = o.reply_to
    if kind == "text":
        if o.text is None:  # an empty TEXT goes to the relay, which says what is wrong with it
            raise UsageError("nothing to send: give TEXT, or an option such as --image or --poll")
        message |= {"text": o.text}
        if o.link_preview:
            message["link_preview"] = True
    elif kind == "poll":
        if o.text is None:
            raise UsageError("a poll needs its question as TEXT")
        message |= {
            "type": "poll",
            "question": o.text,
            "options": o.poll,
            "selectable_count": o.choices,
        }
    elif kind == "contact":
        message |= {"type": "contact", "contacts": [_contact(value) for value in o.contact]}
    elif kind == "react":
        message |= {"type": "reaction", "message_id": o.react, "emoji": o.text or ""}
    elif kind == "edit":
        if o.text is None:
            raise UsageError("an edit needs the new text as TEXT")
        message |= {"type": "edit", "message_id": o.edit, "text": o.text}
    elif kind in {"delete", "forward"}:
        message |= {"type": kind, "message_id": o.delete if kind == "delete" else o.forward}
    else:
        path = files[kind]
        assert path is not None
        message |= {"type": "audio" if kind == "voice" else kind, "base64": _media(path)}
        if kind == "voice":
            message["voice"] = True
        if o.text and kind in {"image", "video", "document"}:
            message["caption"] = o.text
        if kind == "document":
            message["filename"] = path.name
    if o.view_once:
        if kind not in {"image", "video", "voice"}:
            raise UsageError("--view-once goes with --image, --video or --voice")
        message["view_once"] = True
    return message
