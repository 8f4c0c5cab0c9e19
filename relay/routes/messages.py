"""`POST /v1/instances/{instance}/messages`: a signed send becomes a command on `WA_COMMANDS`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.problems import Problem, invalid_body, parse_json
from relay.signed import authenticate
from relay.state import relay_state
from schemas.commands import SEND_COMMAND, parse_send
from schemas.envelope import Envelope, encode, utc_now
from schemas.ids import is_command_id, is_instance_id, new_command_id
from wabus.logs import get_logger

log = get_logger(__name__)


def instance_param(request: Request) -> str:
    instance: str = request.path_params["instance"]
    if not is_instance_id(instance):
        raise Problem(404, "unknown_instance", "instance ids match ^[a-z0-9][a-z0-9_-]{0,62}$")
    return instance


def command_id_from(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        return new_command_id()
    if not is_command_id(key):
        raise Problem(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key is 1-128 letters, digits and _.=- (starting alphanumeric)",
        )
    return key


async def send_message(request: Request) -> Response:
    body, key = await authenticate(request)
    instance = instance_param(request)
    command_id = command_id_from(request)
    try:
        message = parse_send(parse_json(body))
    except ValidationError as error:
        raise invalid_body(error) from error
    state = relay_state(request)
    envelope = Envelope[dict[str, Any]](
        id=command_id,
        type=SEND_COMMAND,
        instance=instance,
        timestamp=utc_now(),
        data=message.model_dump(mode="json"),
    )
    ack = await state.js.publish(
        state.settings.topology.command(instance, SEND_COMMAND),
        encode(envelope),
        headers={"Nats-Msg-Id": command_id},
    )
    log.info(
        "send accepted",
        instance=instance,
        command_id=command_id,
        key_id=key.key_id,
        duplicate=ack.duplicate,
    )
    return JSONResponse(
        {"command_id": command_id, "status": "accepted", "duplicate": bool(ack.duplicate)},
        status_code=202,
    )


routes = [Route("/instances/{instance}/messages", send_message, methods=["POST"])]
