"""Deliveries on the dashboard: the delivery log filtered by endpoint, outcome and time, dead
letters, retry one, recover a time range, enable an endpoint disabled by a 410."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.endpoints import Handler
from relay.models import DeliveryFilter
from relay.problems import invalid_body
from relay.routes import deliveries as api
from relay.state import relay_state
from relay.ui.calls import invoke
from relay.ui.web import Page, Ui, attempt, form_of, protected

FILTERS = ("endpoint", "outcome", "since", "until")
_LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?$")


def as_utc(value: str) -> str:
    """A browser's `datetime-local` value (no zone) read as UTC, as the page says; a value with
    a zone as it is."""
    value = value.strip()
    if _LOCAL_TIME.fullmatch(value):
        return value + ("Z" if value.count(":") == 2 else ":00Z")
    return value


def _given(source: dict[str, str], fields: tuple[str, ...]) -> dict[str, str]:
    return {
        name: as_utc(source[name]) if name in ("since", "until") else source[name]
        for name in fields
        if source.get(name)
    }


def _filter(params: dict[str, str]) -> DeliveryFilter:
    given = _given(params, FILTERS)
    try:
        return DeliveryFilter.model_validate({**given, "limit": 200})
    except ValidationError as error:
        raise invalid_body(error, "invalid_query") from error


def routes(ui: Ui) -> list[Route]:
    async def show(
        request: Request, result: dict[str, Any] | None = None, status: int = 200
    ) -> Response:
        state = relay_state(request)
        params = dict(request.query_params)
        endpoints, endpoints_failed = await attempt(invoke(api.list_endpoints, state))

        async def listed() -> Any:
            return await invoke(api.list_deliveries, state, query=_filter(params))

        rows, rows_failed = await attempt(listed())
        return ui.page(
            request,
            "deliveries.html",
            status,
            params={name: params.get(name, "") for name in FILTERS},
            endpoints=(endpoints or {}).get("endpoints", []),
            rows=(rows or {}).get("deliveries", []),
            failed=rows_failed or endpoints_failed,
            result=result,
        )

    async def page(request: Request) -> Response:
        return await show(request)

    def action(handler: Handler, fields: tuple[str, ...], kind: str) -> Page:
        async def run(request: Request) -> Response:
            form = await form_of(request)
            body = _given(form, fields)
            answer, failed = await attempt(invoke(handler, relay_state(request), body=body))
            if failed:
                return ui.failed(request, failed, "/ui/deliveries")
            return await show(request, {"kind": kind, **answer})

        return run

    actions = [
        ("/deliveries/retry", action(api.retry_delivery, ("event_id", "endpoint"), "retry")),
        (
            "/deliveries/recover",
            action(api.recover_deliveries, ("endpoint", "since", "until"), "recover"),
        ),
        ("/endpoints/enable", action(api.enable_endpoint, ("endpoint",), "enable")),
    ]
    return [
        Route("/deliveries", protected(ui, page), methods=["GET"]),
        *(Route(path, protected(ui, run), methods=["POST"]) for path, run in actions),
    ]
