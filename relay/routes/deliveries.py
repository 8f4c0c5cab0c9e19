"""Webhook deliveries: the delivery log, retrying one event, recovering an endpoint's dead
letters over a time range, and the endpoints' state (enable one that answered 410)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.responses import JSONResponse, Response

from relay.delivery.policy import Delivered
from relay.delivery.records import DeliveryQuery, Outcome
from relay.delivery.service import EventGone, UnknownEndpoint
from relay.delivery.targets import Target
from relay.endpoints import Call, Endpoint, Reply
from relay.models import (
    DeliveryFilter,
    DeliveryList,
    DeliveryRecover,
    DeliveryRetried,
    DeliveryRetry,
    DeliveryView,
    EndpointList,
    EndpointRef,
    EndpointState,
    RecoveryStarted,
)
from relay.problems import Problem

_RETRY = TypeAdapter(DeliveryRetry)
_RECOVER = TypeAdapter(DeliveryRecover)
_ENDPOINT = TypeAdapter(EndpointRef)
_LOG_OFF = Problem(
    409, "delivery_log_off", "the delivery log is off: set DATABASE_URL on the relay to keep it"
)


def _json(model: BaseModel, status: int = 200) -> Response:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


def _check_scope(call: Call, instance: str | None) -> None:
    """A key scoped to instances sees only their endpoints and deliveries."""
    key = call.key
    if key is None or not key.scopes:
        return
    if instance is None or not key.allows(instance):
        what = f"instance {instance!r}" if instance else "the global endpoint or every instance"
        raise Problem(403, "instance_forbidden", f"key {key.key_id!r} is not scoped to {what}")


def _instance_of(endpoint: str) -> str | None:
    return endpoint.split("/", 1)[0] if "/" in endpoint else None


def _check_endpoint(call: Call, endpoint: str) -> None:
    """A scoped key names only per-instance endpoints of its instances: the global endpoint
    receives every instance's events and belongs to the operator, so its rows, retries and
    recoveries are not a tenant's, even for the tenant's own instance."""
    key = call.key
    if key is None or not key.scopes:
        return
    instance = _instance_of(endpoint)
    if instance is None:
        raise Problem(
            403,
            "endpoint_forbidden",
            f"key {key.key_id!r} is scoped to instances; {endpoint!r} is not an endpoint of one",
        )
    _check_scope(call, instance)


def _visible(call: Call, endpoint: str) -> bool:
    """Whether the key may see the delivery rows of `endpoint`."""
    key = call.key
    if key is None or not key.scopes:
        return True
    instance = _instance_of(endpoint)
    return instance is not None and key.allows(instance)


def _target(call: Call, endpoint: str) -> Target:
    _check_endpoint(call, endpoint)
    try:
        return call.state.stores.deliveries.endpoint(endpoint).target
    except UnknownEndpoint as error:
        raise Problem(404, "unknown_endpoint", str(error)) from error


async def list_deliveries(call: Call) -> Response:
    given: DeliveryFilter = call.query
    instance = given.instance or (_instance_of(given.endpoint) if given.endpoint else None)
    if given.endpoint:
        _check_endpoint(call, given.endpoint)
    _check_scope(call, instance)
    delivery_log = call.state.stores.deliveries.log
    if not delivery_log.enabled:
        raise _LOG_OFF
    rows = await delivery_log.query(
        DeliveryQuery(
            endpoint=given.endpoint,
            instance=instance,
            event_id=given.event_id,
            outcome=Outcome(given.outcome) if given.outcome else None,
            since=given.since,
            until=given.until,
            limit=given.limit,
            before=given.before,
        )
    )
    views = [
        DeliveryView(id=row.id, **asdict(row.attempt))
        for row in rows
        if _visible(call, row.attempt.endpoint)
    ]
    full_page = len(rows) == given.limit
    return _json(DeliveryList(deliveries=views, next=rows[-1].id if full_page else None))


async def retry_delivery(call: Call) -> Response:
    given: DeliveryRetry = call.parse(_RETRY)
    _target(call, given.endpoint)
    deliveries = call.state.stores.deliveries
    if not deliveries.log.enabled:
        raise _LOG_OFF
    try:
        decision, attempt = await deliveries.retry(given.event_id, given.endpoint)
    except EventGone as error:
        raise Problem(410, "event_expired", str(error)) from error
    except LookupError as error:
        raise Problem(404, "unknown_delivery", str(error)) from error
    delivered = isinstance(decision, Delivered)
    outcome: Any = "delivered" if delivered else "dead"
    return _json(DeliveryRetried(delivered=delivered, attempt=attempt, outcome=outcome))


async def recover_deliveries(call: Call) -> Response:
    given: DeliveryRecover = call.parse(_RECOVER)
    _target(call, given.endpoint)
    until = given.until or datetime.now(UTC)
    if until <= given.since:
        raise Problem(422, "invalid_range", "`until` must be later than `since`")
    count = await call.state.stores.deliveries.recover(given.endpoint, given.since, until)
    return _json(RecoveryStarted(endpoint=given.endpoint, events=count), 202)


async def _state_of(call: Call, target: Target) -> EndpointState:
    disabled = await call.state.stores.deliveries.states.disabled(target.key)
    return EndpointState(
        endpoint=target.key,
        instance=target.instance,
        url=target.url,
        events=list(target.events),
        disabled=disabled is not None,
        disabled_reason=disabled.reason if disabled else None,
    )


async def list_endpoints(call: Call) -> Response:
    key = call.key
    targets = [
        t
        for t in call.state.stores.deliveries.endpoints()
        if key is None or not key.scopes or (t.instance is not None and key.allows(t.instance))
    ]
    states = [await _state_of(call, t) for t in sorted(targets, key=lambda t: t.key)]
    return _json(EndpointList(endpoints=states))


async def enable_endpoint(call: Call) -> Response:
    given: EndpointRef = call.parse(_ENDPOINT)
    target = _target(call, given.endpoint)
    await call.state.stores.deliveries.states.enable(target.key)
    return _json(await _state_of(call, target))


TAG = "deliveries"
endpoints = [
    Endpoint(
        "GET", "/v1/deliveries", list_deliveries, "listDeliveries",
        "The delivery log: one row per attempt, newest first", TAG,
        {200: Reply("A page of attempts.", DeliveryList),
         409: Reply("The delivery log is off (no DATABASE_URL).")},
        query=DeliveryFilter,
    ),
    Endpoint(
        "POST", "/v1/deliveries/retry", retry_delivery, "retryDelivery",
        "Deliver one logged event to one endpoint again, now", TAG,
        {200: Reply("The attempt was made; `delivered` tells how it went.", DeliveryRetried),
         404: Reply("No such endpoint, or no logged delivery of that event there."),
         409: Reply("The delivery log is off (no DATABASE_URL)."),
         410: Reply("The event is older than the events stream keeps.")},
        body=DeliveryRetry,
    ),
    Endpoint(
        "POST", "/v1/deliveries/recover", recover_deliveries, "recoverDeliveries",
        "Deliver again an endpoint's dead letters of a time range", TAG,
        {202: Reply("Recovery started in the background.", RecoveryStarted),
         404: Reply("No such endpoint.")},
        body=DeliveryRecover,
        description="Events dead-lettered for the endpoint in [since, until) are delivered "
        "again, except those the delivery log shows delivered since.",
    ),
    Endpoint(
        "GET", "/v1/endpoints", list_endpoints, "listEndpoints",
        "Webhook endpoints and whether they are disabled", TAG,
        {200: Reply("Every endpoint the key may see.", EndpointList)},
    ),
    Endpoint(
        "POST", "/v1/endpoints/enable", enable_endpoint, "enableEndpoint",
        "Enable an endpoint that was disabled after answering 410 Gone", TAG,
        {200: Reply("Its state now.", EndpointState), 404: Reply("No such endpoint.")},
        body=EndpointRef,
    ),
]  # fmt: skip
