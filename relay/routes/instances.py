"""Instances: create, list, get, delete — the configurations the connector watches."""

from __future__ import annotations

import secrets

from pydantic import TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response

from relay import quotas
from relay.endpoints import Call, Endpoint, Reply
from relay.models import (
    InstanceCreate,
    InstanceList,
    InstanceUpdate,
    InstanceView,
    WebhookEndpointIn,
    WebhookEndpointView,
)
from relay.problems import Problem, field_error, field_problem
from relay.routes.common import load_config, load_status
from relay.stores.ports import RevisionConflict
from relay.webhooks.signature import new_secret
from schemas.envelope import utc_now
from schemas.instances import InstanceConfig, WebhookEndpoint
from wabus.logs import get_logger
from wabus.ssrf import BlockedTarget, check_url

log = get_logger(__name__)

_CREATE = TypeAdapter(InstanceCreate)
_UPDATE = TypeAdapter(InstanceUpdate)
_WEBHOOK = TypeAdapter(WebhookEndpointIn)
MAX_WEBHOOKS = 16


def _endpoint(given: WebhookEndpointIn, index: int | None, call: Call) -> WebhookEndpoint:
    """The endpoint to store; `index` is its place in a create body (None: the body is it)."""
    field = "url" if index is None else f"webhooks[{index}].url"
    try:
        check_url(given.url, call.state.settings.webhook_allow_cidrs)
    except BlockedTarget as error:
        raise Problem(422, "webhook_url_blocked", f"{field} is not reachable: {error}") from error
    except ValueError as error:  # the model parsed it already; a guard stricter than it
        rule = f"not a valid URL: {error}"
        loc = ("url",) if index is None else ("webhooks", index, "url")
        raise field_problem("invalid_body", [field_error(loc, rule, "url")]) from error
    return WebhookEndpoint(
        id=given.id or f"wh_{secrets.token_hex(6)}",
        url=given.url,
        events=given.events,
        secret=given.secret or new_secret(),
    )


def view(config: InstanceConfig, *, with_secrets: bool = False) -> InstanceView:
    return InstanceView(
        id=config.id,
        desired_state=config.desired_state,
        webhooks=[WebhookEndpointView.of(e, with_secret=with_secrets) for e in config.webhooks],
        calls=config.calls,
        created_at=config.created_at,
        updated_at=config.updated_at,
    )


def _json(model: InstanceView | InstanceList, status: int = 200) -> Response:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


async def create_instance(call: Call) -> Response:
    given: InstanceCreate = call.parse(_CREATE)
    if call.key is not None and not call.key.allows(given.id):
        raise Problem(
            403, "instance_forbidden", f"key {call.key.key_id!r} is not scoped to {given.id!r}"
        )
    ids = [e.id for e in given.webhooks if e.id]
    if len(ids) != len(set(ids)):
        raise Problem(422, "duplicate_webhook_id", "webhook endpoint ids must be unique")
    scoped = call.key if call.key is not None and call.key.scopes else None
    quota = call.state.settings.key_max_instances
    instances = call.state.stores.instances
    if scoped is not None:
        await quotas.check_room(instances, scoped, quota)
    now = utc_now()
    config = InstanceConfig(
        id=given.id,
        desired_state=given.desired_state,
        webhooks=[_endpoint(e, i, call) for i, e in enumerate(given.webhooks)],
        calls=given.calls,
        created_at=now,
        updated_at=now,
    )
    try:
        revision = await instances.create(config.id, config.model_dump_json().encode())
    except RevisionConflict as error:
        raise Problem(409, "instance_exists", f"instance {given.id!r} already exists") from error
    if scoped is not None:
        await quotas.confirm(instances, scoped, quota, config.id, revision)
    log.info("instance created", instance=config.id, key_id=call.key and call.key.key_id)
    return _json(view(config, with_secrets=True), 201)


async def list_instances(call: Call) -> Response:
    configs: list[InstanceConfig] = []
    for entry in await call.state.stores.instances.entries():
        if call.key is None or call.key.allows(entry.key):
            try:
                configs.append(InstanceConfig.model_validate_json(entry.value))
            except ValidationError as error:  # written on NATS, not through this API
                log.error("stored instance config skipped", key=entry.key, error=str(error))
    configs.sort(key=lambda config: config.id)
    return _json(InstanceList(instances=[view(config) for config in configs]))


async def get_instance(call: Call) -> Response:
    config, _ = await load_config(call.state, call.instance)
    status = await load_status(call.state, call.instance)
    return _json(view(config).model_copy(update={"status": status}))


async def _replace(call: Call, config: InstanceConfig, revision: int) -> None:
    """Write `config` over `revision`; 409 when someone changed the instance meanwhile."""
    try:
        await call.state.stores.instances.update(
            config.id, config.model_dump_json().encode(), revision
        )
    except RevisionConflict as error:
        raise Problem(
            409, "instance_changed", "the instance changed meanwhile; read it and try again"
        ) from error


async def update_instance(call: Call) -> Response:
    change: InstanceUpdate = call.parse(_UPDATE)
    config, revision = await load_config(call.state, call.instance)
    changes: dict[str, object] = {}
    if change.desired_state is not None:
        changes["desired_state"] = change.desired_state
    if change.calls is not None:
        changes["calls"] = change.calls
    config = config.model_copy(update={**changes, "updated_at": utc_now()})
    await _replace(call, config, revision)
    log.info("instance updated", instance=call.instance, changed=sorted(changes))
    return _json(view(config))


async def add_webhook(call: Call) -> Response:
    given: WebhookEndpointIn = call.parse(_WEBHOOK)
    config, revision = await load_config(call.state, call.instance)
    endpoint = _endpoint(given, None, call)
    if any(existing.id == endpoint.id for existing in config.webhooks):
        raise Problem(409, "duplicate_webhook_id", f"webhook {endpoint.id!r} already exists")
    if len(config.webhooks) >= MAX_WEBHOOKS:
        raise Problem(409, "too_many_webhooks", f"an instance has at most {MAX_WEBHOOKS}")
    config = config.model_copy(
        update={"webhooks": [*config.webhooks, endpoint], "updated_at": utc_now()}
    )
    await _replace(call, config, revision)
    log.info("webhook added", instance=call.instance, webhook=endpoint.id)
    view_with_secret = WebhookEndpointView.of(endpoint, with_secret=True)
    return JSONResponse(view_with_secret.model_dump(mode="json"), status_code=201)


async def delete_webhook(call: Call) -> Response:
    webhook_id = call.param("webhook_id")
    config, revision = await load_config(call.state, call.instance)
    remaining = [e for e in config.webhooks if e.id != webhook_id]
    if len(remaining) == len(config.webhooks):
        raise Problem(404, "unknown_webhook", f"no webhook {webhook_id!r} on {call.instance!r}")
    config = config.model_copy(update={"webhooks": remaining, "updated_at": utc_now()})
    await _replace(call, config, revision)
    log.info("webhook deleted", instance=call.instance, webhook=webhook_id)
    return Response(status_code=204)


async def delete_instance(call: Call) -> Response:
    # the raw entry, not the parsed config: one that no longer validates can still be deleted
    instances = call.state.stores.instances
    found = await instances.get(call.instance)
    if found is None:
        raise Problem(404, "unknown_instance", f"no instance {call.instance!r}")
    try:
        await instances.delete(call.instance, found.revision)
    except RevisionConflict as error:
        raise Problem(
            409, "instance_changed", "the instance changed while deleting it; try again"
        ) from error
    log.info("instance deleted", instance=call.instance, key_id=call.key and call.key.key_id)
    return Response(status_code=204)


TAG = "instances"
endpoints = [
    Endpoint(
        "POST", "/v1/instances", create_instance, "createInstance", "Create an instance", TAG,
        {
            201: Reply("Created; webhook secrets appear in this answer only.", InstanceView),
            409: Reply("`instance_exists`: the id is taken; `quota_exceeded`: a scoped key "
                       "holds `WABUS_KEY_MAX_INSTANCES` instances already.", None),
        },
        body=InstanceCreate,
    ),
    Endpoint(
        "GET", "/v1/instances", list_instances, "listInstances",
        "List the instances the key may see", TAG, {200: Reply("The instances.", InstanceList)},
    ),
    Endpoint(
        "GET", "/v1/instances/{instance}", get_instance, "getInstance",
        "An instance's configuration and status", TAG, {200: Reply("The instance.", InstanceView)},
    ),
    Endpoint(
        "PATCH", "/v1/instances/{instance}", update_instance, "updateInstance",
        "Start or stop an instance's session (`desired_state`)", TAG,
        {200: Reply("The instance.", InstanceView),
         409: Reply("`instance_changed`: changed meanwhile; read it and retry.")},
        body=InstanceUpdate,
    ),
    Endpoint(
        "DELETE", "/v1/instances/{instance}", delete_instance, "deleteInstance",
        "Delete an instance (the connector stops its session)", TAG, {204: Reply("Deleted.")},
    ),
    Endpoint(
        "POST", "/v1/instances/{instance}/webhooks", add_webhook, "addWebhook",
        "Add a webhook endpoint to an instance", TAG,
        {201: Reply("Added; its secret appears in this answer only.", WebhookEndpointView),
         409: Reply("`duplicate_webhook_id`, `too_many_webhooks` or `instance_changed`.")},
        body=WebhookEndpointIn,
    ),
    Endpoint(
        "DELETE", "/v1/instances/{instance}/webhooks/{webhook_id}", delete_webhook,
        "deleteWebhook", "Remove a webhook endpoint from an instance", TAG,
        {204: Reply("Removed."), 404: Reply("`unknown_webhook`.")},
    ),
]  # fmt: skip
