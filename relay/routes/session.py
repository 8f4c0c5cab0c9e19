"""Session commands: phone pairing code and logout, published for the connector to execute."""

from __future__ import annotations

import time

from pydantic import TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response

from relay.endpoints import Call, Endpoint, Reply
from relay.models import CommandAccepted, PairAnswer, WaitQuery
from relay.publish import command_id_from, publish_command
from schemas.commands import LOGOUT_COMMAND, PAIR_PHONE_COMMAND, Logout, PairPhone
from schemas.instances import InstanceStatus

_PAIR = TypeAdapter(PairPhone)
_LOGOUT = TypeAdapter(Logout)
DEFAULT_PAIR_WAIT = 10.0


async def request_pair_code(call: Call) -> Response:
    command_id = command_id_from(call.headers)
    pair = call.parse(_PAIR)
    asked_at = time.time()
    await publish_command(
        call.state, call.instance, PAIR_PHONE_COMMAND, pair.model_dump(mode="json"), command_id
    )
    wait = call.query.wait if "wait" in call.query.model_fields_set else DEFAULT_PAIR_WAIT

    def fresh_code(value: bytes) -> bool:
        try:
            status = InstanceStatus.model_validate_json(value)
        except ValidationError:
            return False
        return bool(status.pair_code) and status.updated_at.timestamp() >= asked_at - 1

    value = None
    if wait > 0:
        value = await call.state.stores.status.wait(
            call.instance, fresh_code, min(wait, call.state.settings.max_wait_seconds)
        )
    if value is not None and fresh_code(value):
        code = InstanceStatus.model_validate_json(value).pair_code
        answer = PairAnswer(command_id=command_id, status="ready", pair_code=code)
        return JSONResponse(answer.model_dump(mode="json"))
    answer = PairAnswer(command_id=command_id, status="accepted")
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)


async def logout(call: Call) -> Response:
    command_id = command_id_from(call.headers)
    data = call.parse(_LOGOUT) if call.body else Logout()
    duplicate = await publish_command(
        call.state, call.instance, LOGOUT_COMMAND, data.model_dump(mode="json"), command_id
    )
    answer = CommandAccepted(command_id=command_id, duplicate=duplicate)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)


TAG = "instances"
endpoints = [
    Endpoint(
        "POST", "/v1/instances/{instance}/pair", request_pair_code, "requestPairCode",
        "Request a phone pairing code (the alternative to scanning the QR)", TAG,
        {200: Reply("The code to type on the phone.", PairAnswer),
         202: Reply("Queued; the code did not arrive within `wait` (default 10 s).", PairAnswer)},
        body=PairPhone, query=WaitQuery, headers=("Idempotency-Key",),
    ),
    Endpoint(
        "POST", "/v1/instances/{instance}/logout", logout, "logout",
        "Log the device out of WhatsApp", TAG,
        {202: Reply("Queued.", CommandAccepted)}, body=Logout, body_required=False,
        headers=("Idempotency-Key",),
    ),
]  # fmt: skip
