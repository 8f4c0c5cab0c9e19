"""Status and QR of an instance, read from the status bucket the connector writes."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from relay.endpoints import Call, Endpoint, Reply
from relay.models import ImageQuery, QrCode
from relay.problems import Problem
from relay.qr import render
from relay.routes.common import load_config, load_status
from relay.state import RelayState
from schemas.envelope import utc_now
from schemas.instances import InstanceStatus, SessionState


async def current_status(state: RelayState, instance: str) -> InstanceStatus:
    """The reported status; for a configured instance the connector has not reported yet,
    `stopped` or `connecting` with `reason_code=not_reported`."""
    config, _ = await load_config(state, instance)
    status = await load_status(state, instance)
    if status is not None:
        return status
    return InstanceStatus(
        instance=instance,
        state=SessionState.STOPPED
        if config.desired_state == "stopped"
        else SessionState.CONNECTING,
        reason_code="not_reported",
        reason="no connector has reported this instance yet",
        updated_at=config.updated_at or utc_now(),
    )


async def current_qr(state: RelayState, instance: str) -> QrCode:
    status = await current_status(state, instance)
    if status.state is not SessionState.QR or not status.qr:
        raise Problem(
            409,
            "qr_unavailable",
            f"instance {instance!r} is {status.state.value}: a QR exists only while it waits "
            "for pairing (state `qr`)",
        )
    return QrCode(
        instance=instance,
        qr=status.qr,
        expires_at=status.qr_expires_at,
        refreshes=status.qr_refreshes,
    )


async def get_status(call: Call) -> Response:
    status = await current_status(call.state, call.instance)
    return JSONResponse(status.model_dump(mode="json"))


async def get_qr(call: Call) -> Response:
    return JSONResponse((await current_qr(call.state, call.instance)).model_dump(mode="json"))


async def get_qr_png(call: Call) -> Response:
    qr = await current_qr(call.state, call.instance)
    return Response(render(qr.qr, "png", call.query.scale), media_type="image/png")


async def get_qr_svg(call: Call) -> Response:
    qr = await current_qr(call.state, call.instance)
    return Response(render(qr.qr, "svg", call.query.scale), media_type="image/svg+xml")


_NO_QR = Reply("`qr_unavailable`: the instance is not waiting for pairing.")
TAG = "instances"
endpoints = [
    Endpoint(
        "GET", "/v1/instances/{instance}/status", get_status, "getStatus",
        "Session state, reason, phone, push name, next retry", TAG,
        {200: Reply("The status.", InstanceStatus)},
    ),
    Endpoint(
        "GET", "/v1/instances/{instance}/qr", get_qr, "getQr", "The QR to pair, as JSON", TAG,
        {200: Reply("The raw QR payload and its expiry.", QrCode), 409: _NO_QR},
    ),
    Endpoint(
        "GET", "/v1/instances/{instance}/qr.png", get_qr_png, "getQrPng",
        "The QR to pair, as a PNG image", TAG,
        {200: Reply("PNG image.", media_type="image/png"), 409: _NO_QR}, query=ImageQuery,
    ),
    Endpoint(
        "GET", "/v1/instances/{instance}/qr.svg", get_qr_svg, "getQrSvg",
        "The QR to pair, as an SVG image", TAG,
        {200: Reply("SVG image.", media_type="image/svg+xml"), 409: _NO_QR}, query=ImageQuery,
    ),
]  # fmt: skip
