"""Webhook replies: a 2xx answer to `message.received` whose JSON body is
`{"reply": {"text": …}}` (any send kind, without `to`) or the Node design's `{"response": "…"}`
becomes a send to the same chat.

The command id is derived from the event id, so a redelivered event produces the same command,
which JetStream's duplicate window and the connector's send records turn into one send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from schemas.commands import SendMessage, parse_send

MAX_REPLY_BYTES = 64 * 1024


def reply_command_id(event_id: str) -> str:
    return f"reply-{event_id}"


class RefusedReply(ValueError):
    """The answer asks for a reply that cannot be sent (not a valid send, or cut at the limit)."""


def reply_to_event(
    event_type: str, data: Mapping[str, Any], response_body: bytes
) -> SendMessage | None:
    """The send a webhook answer asks for, or None when it asks for none (not JSON, no `reply`
    nor `response`, not an answer to `message.received`, our own message). RefusedReply when it
    asks for a send that is not valid."""
    if event_type != "message.received" or not response_body:
        return None
    if data.get("from_me") or not data.get("chat"):
        return None  # never answer our own messages: an echo bot would talk to itself forever
    try:
        answer = json.loads(response_body)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    if not isinstance(answer, dict):
        return None
    if isinstance(answer.get("reply"), dict):
        request = {**answer["reply"], "to": data["chat"]}
    elif isinstance(answer.get("response"), str) and answer["response"]:
        request = {"text": answer["response"], "to": data["chat"]}
    else:
        return None
    try:
        return parse_send(request)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "reply"
        raise RefusedReply(f"not a valid send: {where}: {problem['msg']}") from None
