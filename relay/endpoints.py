"""Routes declared once as data: the same `Endpoint` list builds the Starlette routes and the
OpenAPI document, so the documentation cannot drift from what the relay enforces.

Every signed endpoint runs the same gate before its handler: body size, signature, rate limit,
replay record, then the instance id and the key's scope, the body's media type, then the query.
A handler only ever sees an authenticated, authorised request whose query already validated.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from relay.auth import IDEMPOTENCY_KEY_HEADER, signed_command_id
from relay.problems import (
    Problem,
    field_error,
    field_problem,
    invalid_body,
    parse_json,
    require_json_body,
)
from relay.signed import authenticate, header_map
from relay.state import RelayState
from schemas.ids import is_instance_id
from wabus.settings import ApiKey, Settings

_PATH_PARAM = re.compile(r"{(\w+)}")
NONCE = "nonce"
"""A query parameter every signed route accepts and ignores: it makes two otherwise identical
requests within one second differ, so the second is not refused as a replay."""
_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Reply:
    """One documented answer of an endpoint."""

    description: str
    model: Any = None
    """A pydantic model or type for a JSON body; None for no body or a non-JSON one."""
    media_type: str = "application/json"


@dataclass
class Call:
    """An authenticated request as a handler sees it (its ASGI scope: no Starlette `Request`
    is built on the way, one object fewer on every send)."""

    scope: Scope
    state: RelayState
    body: bytes
    key: ApiKey | None
    query: Any
    signed_command_id: str | None = None
    """Set on an endpoint with `replay_by_publish` for a `v2` request without Idempotency-Key:
    the command id to publish under, and a duplicate of it is a replay (`relay.signed`)."""

    @property
    def instance(self) -> str:
        """The path's instance id, already validated and within the key's scope."""
        value: str = self.scope["path_params"]["instance"]
        return value

    def param(self, name: str) -> str:
        value: str = self.scope["path_params"][name]
        return value

    @property
    def headers(self) -> dict[str, str]:
        """The request's headers, lower-case names (`relay.signed.header_map`)."""
        return header_map(self.scope)

    def parse(self, adapter: TypeAdapter[Any]) -> Any:
        """The JSON body validated by `adapter`; 422 naming the fields otherwise."""
        try:
            return adapter.validate_python(parse_json(self.body))
        except ValidationError as error:
            raise invalid_body(error) from error


Handler = Callable[[Call], Awaitable[Response]]


def default_limit(settings: Settings) -> int:
    return settings.max_body_bytes


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    replies: Mapping[int, Reply]
    body: Any = None
    """The request body's type (documented, and the handler validates with it)."""
    body_required: bool = True
    query: type[BaseModel] | None = None
    signed: bool = True
    body_limit: Callable[[Settings], int] = default_limit
    description: str = ""
    deprecated: bool = False
    headers: tuple[str, ...] = ()
    """Optional request headers the endpoint reads (documented): e.g. `Idempotency-Key`."""
    hot: bool = False
    """Served by `relay.middleware.hot` ahead of Starlette's router: the signed send."""
    replay_by_publish: bool = False
    """The handler publishes one command, under `Call.signed_command_id` or else the
    Idempotency-Key, before anything else takes effect: for a `v2` signature that publish is
    the replay guard (one JetStream round trip, not two)."""

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    def route(self) -> Route:
        return Route(self.path, _EndpointApp(self), methods=[self.method], name=self.operation_id)

    @cached_property
    def _has_instance(self) -> bool:
        return "instance" in self.path_params

    async def serve(self, scope: Scope, receive: Receive) -> Response:
        """The gate (signature, replay, rate, scope, media type, query), then the handler."""
        state: RelayState = scope["state"]["relay"]
        body, key, command_id = b"", None, None
        if self.signed:
            limit = self.body_limit(state.settings)
            body, verified = await authenticate(
                scope, receive, state, limit, self.replay_by_publish
            )
            key = verified.key
            if (
                self.replay_by_publish
                and verified.covers_idempotency_key
                and IDEMPOTENCY_KEY_HEADER not in header_map(scope)
            ):
                command_id = signed_command_id(key, verified.signature)
        if self._has_instance:
            instance = scope["path_params"]["instance"]
            if not is_instance_id(instance):
                raise Problem(
                    404, "unknown_instance", "instance ids match ^[a-z0-9][a-z0-9_-]{0,62}$"
                )
            if key is not None and not key.allows(instance):
                raise Problem(
                    403,
                    "instance_forbidden",
                    f"key {key.key_id!r} is not scoped to instance {instance!r}",
                )
        if self.body is not None:
            require_json_body(header_map(scope).get("content-type"), body)
        query = self._query(scope["query_string"])
        return await self.handler(Call(scope, state, body, key, query, command_id))

    @cached_property
    def _default_query(self) -> Any:
        return None if self.query is None else self.query()

    def _query(self, query_string: bytes) -> Any:
        if not query_string:
            return self._default_query  # the common case, without parsing anything
        params = dict(QueryParams(query_string))
        if self.signed and NONCE in params and not _NONCE.fullmatch(params.pop(NONCE)):
            rule = "expected 1-64 of A-Za-z0-9_-"
            raise field_problem(
                "invalid_query", [field_error((NONCE,), rule, "string_pattern_mismatch")]
            )
        if self.query is None:
            if params:
                rule = "this route takes no query parameters"
                raise field_problem(
                    "invalid_query",
                    [field_error((name,), rule, "extra_forbidden") for name in sorted(params)],
                )
            return None
        try:
            return self.query.model_validate(params)
        except ValidationError as error:
            raise invalid_body(error, "invalid_query") from error


class _EndpointApp:
    """An endpoint as a plain ASGI app. Starlette wraps a function endpoint in its own request
    and exception layers; a Problem raised here reaches the app's handlers (`relay.problems`)
    through the exception middleware all the same, one layer fewer on every request."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint.serve(scope, receive)
        await response(scope, receive, send)


def routes_of(endpoints: list[Endpoint]) -> list[Route]:
    return [endpoint.route() for endpoint in endpoints]
