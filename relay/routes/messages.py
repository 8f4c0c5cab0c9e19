"""Sends: `POST /v1/instances/{instance}/messages` queues a send command on `WA_COMMANDS`
(optionally waiting for WhatsApp's answer), and `GET …/messages/{command_id}` reads its record.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from relay.endpoints import Call, Endpoint, Reply
from relay.models import SendAnswer, WaitQuery
from relay.problems import Problem, invalid_body, parse_json
from relay.publish import command_id_from, publish_command
from relay.signed import replayed
from relay.state import RelayState
from schemas.commands import SEND_COMMAND, SendAudio, SendMessage, SendSticker, parse_send
from schemas.ids import COMMAND_ID_RULE, is_command_id
from schemas.instances import SendRecord, SendState, send_record_key
from wabus.conversion import ConversionError
from wabus.settings import Settings
from wabus.stickers import probe_image
from wabus.voice import probe_audio

_FINAL = {SendState.SENT.value, SendState.FAILED.value}


def _final(value: bytes) -> bool:
    try:
        return SendRecord.model_validate_json(value).state.value in _FINAL
    except ValidationError:
        return False


def send_body_limit(settings: Settings) -> int:
    """Sends may carry media inline as base64, so they get a larger limit than other routes."""
    return settings.max_send_body_bytes


async def check_inline_media(message: SendMessage) -> None:
    """Inline media the connector must convert (a voice note, a sticker) is probed here, so
    that bytes it could not read are a 422 naming the reason, before anything is queued.
    Media given by URL is fetched, and so checked, by the connector (`message.failed`)."""
    if isinstance(message, SendAudio) and message.voice and message.base64 is not None:
        probe = probe_audio
    elif isinstance(message, SendSticker) and message.base64 is not None:
        probe = probe_image
    else:
        return
    data = base64.b64decode(message.base64)
    try:
        await asyncio.to_thread(probe, data)
    except ConversionError as error:
        raise Problem(422, error.code, f"base64: {error.reason}") from error


async def send(
    state: RelayState,
    instance: str,
    data: Any,
    command_id: str,
    wait: float,
    duplicate_is_replay: bool = False,
) -> tuple[int, SendAnswer]:
    """Validate, publish and (when `wait`) watch the send record; the HTTP status and answer.
    With `duplicate_is_replay` (a `v2` send's signed command id) a duplicate is refused."""
    try:
        message = parse_send(data)
    except ValidationError as error:
        raise invalid_body(error) from error
    await check_inline_media(message)
    duplicate = await publish_command(state, instance, SEND_COMMAND, message, command_id)
    if duplicate and duplicate_is_replay:
        raise replayed()
    answer = SendAnswer(command_id=command_id, status="accepted", duplicate=duplicate)
    if wait <= 0:
        return 202, answer
    key = send_record_key(instance, command_id)
    value = await state.stores.sends.wait(key, _final, min(wait, state.settings.max_wait_seconds))
    if value is None:
        return 202, answer
    record = SendRecord.model_validate_json(value)
    answer = answer.model_copy(
        update={
            "status": record.state.value if record.state is not SendState.QUEUED else "accepted",
            "message_id": record.message_id,
            "chat": record.chat,
            "error_code": record.error_code,
            "error": record.error,
        }
    )
    return (200 if record.state.value in _FINAL else 202), answer


async def send_message(call: Call) -> Response:
    signed = call.signed_command_id
    command_id = signed or command_id_from(call.headers)
    status, answer = await send(
        call.state, call.instance, parse_json(call.body), command_id, call.query.wait, bool(signed)
    )
    # serialised by pydantic in one step (JSONResponse would dump to a dict, then json.dumps it)
    return Response(answer.model_dump_json(), status, media_type="application/json")


async def get_send(call: Call) -> Response:
    command_id = call.param("command_id")
    if not is_command_id(command_id):
        raise Problem(404, "unknown_send", f"a command id is {COMMAND_ID_RULE}")
    found = await call.state.stores.sends.get(send_record_key(call.instance, command_id))
    if found is None:
        raise Problem(
            404,
            "unknown_send",
            f"no record of send {command_id!r}: still queued (the connector has not picked it "
            "up), or unknown, or expired",
        )
    return JSONResponse(SendRecord.model_validate_json(found).model_dump(mode="json"))


TAG = "messages"
endpoints = [
    Endpoint(
        "POST", "/v1/instances/{instance}/messages", send_message, "sendMessage",
        "Send a message of any kind", TAG,
        {
            200: Reply("`wait` saw WhatsApp's answer: `sent` or `failed`.", SendAnswer),
            202: Reply("Queued (also when `wait` ran out): the result arrives as a "
                       "`message.sent` / `message.failed` webhook.", SendAnswer),
            413: Reply("`body_too_large` or `command_too_large` (send media by `url`)."),
            422: Reply("`invalid_body` (names each field and rule), or inline media a voice "
                       "note or sticker cannot be made of: `unsupported_media`, "
                       "`undecodable_media`, `media_too_large`, `media_too_long`."),
        },
        body=SendMessage, query=WaitQuery, body_limit=send_body_limit,
        headers=("Idempotency-Key",), hot=True, replay_by_publish=True,
    ),
    Endpoint(
        "GET", "/v1/instances/{instance}/messages/{command_id}", get_send, "getSend",
        "The fate of a send, by command id", TAG,
        {200: Reply("The send record.", SendRecord),
         404: Reply("`unknown_send`: not picked up yet, unknown, or expired.")},
    ),
]  # fmt: skip
