"""Chat commands: read receipts and typing presence, published for the connector."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from starlette.responses import JSONResponse, Response

from relay.endpoints import Call, Endpoint, Reply
from relay.models import CommandAccepted
from relay.publish import command_id_from, publish_command
from schemas.commands import MARK_READ_COMMAND, PRESENCE_COMMAND, MarkRead, Presence


def _command(name: str, model: Any) -> Any:
    adapter: TypeAdapter[Any] = TypeAdapter(model)

    async def handle(call: Call) -> Response:
        command_id = command_id_from(call.headers)
        data = call.parse(adapter)
        duplicate = await publish_command(
            call.state, call.instance, name, data.model_dump(mode="json"), command_id
        )
        answer = CommandAccepted(command_id=command_id, duplicate=duplicate)
        return JSONResponse(answer.model_dump(mode="json"), status_code=202)

    return handle


TAG = "chats"
endpoints = [
    Endpoint(
        "POST", "/v1/instances/{instance}/read", _command(MARK_READ_COMMAND, MarkRead),
        "markRead", "Mark messages of a chat as read", TAG,
        {202: Reply("Queued.", CommandAccepted)}, body=MarkRead, headers=("Idempotency-Key",),
    ),
    Endpoint(
        "POST", "/v1/instances/{instance}/presence", _command(PRESENCE_COMMAND, Presence),
        "sendPresence", "Show typing or recording in a chat (or stop)", TAG,
        {202: Reply("Queued.", CommandAccepted)}, body=Presence, headers=("Idempotency-Key",),
    ),
]  # fmt: skip
