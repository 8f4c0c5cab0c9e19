"""The Node design's API, mapped onto v1 for a gradual migration.

`GET /api/qr/{instanceId}`, `POST /api/send` (`{instanceId, to, message}`) and
`GET /api/status/{instanceId}` answer exactly like their v1 routes and sit behind the same
signature check (the old static `x-api-key` is not accepted: a leaked header must not be enough).
`GET /health` stays unsigned, like `/healthz`. Each answer carries `Deprecation: true` and a
`Link` to its v1 successor.
"""

from __future__ import annotations

from pydantic import Field, TypeAdapter, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.endpoints import Call, Endpoint, Reply
from relay.models import QrCode, SendAnswer
from relay.problems import Problem
from relay.publish import command_id_from
from relay.routes.messages import send
from relay.routes.status import current_qr, current_status
from schemas.commands import normalise_recipient
from schemas.envelope import ContractModel
from schemas.ids import INSTANCE_ID_PATTERN
from schemas.instances import InstanceStatus


class LegacySend(ContractModel):
    """The Node design's send body; `message` is the text."""

    instanceId: str = Field(pattern=INSTANCE_ID_PATTERN)  # the Node wire name
    to: str
    message: str = Field(min_length=1, max_length=65536)

    @field_validator("to")
    @classmethod
    def _recipient(cls, value: str) -> str:
        return normalise_recipient(value)


_SEND = TypeAdapter(LegacySend)


def _deprecated(response: Response, successor: str) -> Response:
    response.headers["Deprecation"] = "true"
    response.headers["Link"] = f'<{successor}>; rel="successor-version"'
    return response


async def legacy_qr(call: Call) -> Response:
    qr = await current_qr(call.state, call.instance)
    return _deprecated(
        JSONResponse(qr.model_dump(mode="json")), f"/v1/instances/{call.instance}/qr"
    )


async def legacy_status(call: Call) -> Response:
    status = await current_status(call.state, call.instance)
    return _deprecated(
        JSONResponse(status.model_dump(mode="json")), f"/v1/instances/{call.instance}/status"
    )


async def legacy_send(call: Call) -> Response:
    given: LegacySend = call.parse(_SEND)
    if call.key is not None and not call.key.allows(given.instanceId):
        raise Problem(
            403,
            "instance_forbidden",
            f"key {call.key.key_id!r} is not scoped to instance {given.instanceId!r}",
        )
    status, answer = await send(
        call.state,
        given.instanceId,
        {"to": given.to, "text": given.message},
        command_id_from(call.headers),
        0,
    )
    return _deprecated(
        JSONResponse(answer.model_dump(mode="json"), status_code=status),
        f"/v1/instances/{given.instanceId}/messages",
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


health_route = Route("/health", health, methods=["GET"])

TAG = "legacy"
endpoints = [
    Endpoint(
        "GET", "/api/qr/{instance}", legacy_qr, "legacyQr", "Node API: QR (→ GET /v1/…/qr)", TAG,
        {200: Reply("As `getQr`.", QrCode)}, deprecated=True,
    ),
    Endpoint(
        "POST", "/api/send", legacy_send, "legacySend",
        "Node API: send text (→ POST /v1/…/messages)", TAG,
        {202: Reply("As `sendMessage`.", SendAnswer)}, body=LegacySend,
        deprecated=True, headers=("Idempotency-Key",),
    ),
    Endpoint(
        "GET", "/api/status/{instance}", legacy_status, "legacyStatus",
        "Node API: status (→ GET /v1/…/status)", TAG,
        {200: Reply("As `getStatus`.", InstanceStatus)}, deprecated=True,
    ),
]  # fmt: skip
