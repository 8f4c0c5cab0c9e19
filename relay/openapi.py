"""The OpenAPI 3.1 document, generated from the same `Endpoint` list and pydantic models the
relay validates with (pydantic's JSON Schema is 2020-12, which OpenAPI 3.1 uses as is)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import TypeAdapter

from relay.endpoints import NONCE, Endpoint
from relay.problems import PROBLEM_JSON, ProblemDetails
from schemas.ids import COMMAND_ID_MAX, IDEMPOTENCY_KEY_PATTERN, INSTANCE_ID_PATTERN

REF = "#/components/schemas/{model}"

_SIGNED_ERRORS = {
    401: "Authentication failed: `missing_signature`, `unknown_key`, `invalid_timestamp`, "
    "`timestamp_out_of_tolerance`, `invalid_signature`, `replayed_request`.",
    408: "`header_timeout` or `body_timeout`: the request did not arrive within "
    "`WABUS_HEADER_TIMEOUT` / `WABUS_BODY_TIMEOUT`; the connection is closed.",
    413: "`body_too_large`.",
    422: "`invalid_json`, `invalid_body` or `invalid_query`; `detail` and `errors` name each "
    "field and the rule it broke.",
    429: "`rate_limited` (this key's budget), or `too_many_failed_requests` (this client "
    "address failed authentication too often); see `Retry-After`.",
    503: "`bus_unavailable`: NATS did not answer in time; retry (signed anew).",
}
_BODY_ERRORS = {
    415: "`unsupported_media_type`: a body that is not `Content-Type: application/json`.",
}
_INSTANCE_ERRORS = {
    403: "`instance_forbidden`: the key is scoped to other instances.",
    404: "`unknown_instance` (or another `unknown_…` for the resource).",
}

SIGNING = """Every route but the health, metrics and documentation routes is signed:

```
X-Wabus-Key-Id:    <key id>
X-Wabus-Timestamp: <unix seconds>
X-Wabus-Signature: v2=<hex HMAC-SHA256(secret, canonical)>
canonical = "v2\\n<timestamp>\\n<METHOD>\\n<path?query>\\n<key>\\n<hex sha256(body)>"
```

`<key>` is the request's `Idempotency-Key`, or empty without one.

`v1=` over `"<timestamp>\\n<METHOD>\\n<path?query>\\n<hex sha256(body)>"` (without the
`Idempotency-Key`) is still accepted; one header never mixes the two.
A signature is accepted once (replays are refused by every replica) and within ±300 s of the
relay's clock. A retry is signed anew; `Idempotency-Key` makes it create no second command (a
`v2` send repeated with its key gets the idempotent answer)."""


def _name(model: Any) -> str:
    return getattr(model, "__name__", None) or str(model)


def openapi_document(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    models: dict[str, Any] = {"ProblemDetails": ProblemDetails}
    for endpoint in endpoints:
        if endpoint.body is not None:
            models[_body_name(endpoint)] = endpoint.body
        for reply in endpoint.replies.values():
            if reply.model is not None:
                models[_name(reply.model)] = reply.model
    inputs: list[tuple[str, Literal["validation"], TypeAdapter[Any]]] = [
        (name, "validation", TypeAdapter(model)) for name, model in models.items()
    ]
    refs, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF)
    schemas = dict(definitions.get("$defs", {}))
    by_name = {name: refs[(name, "validation")] for name in models}
    for name, schema in list(by_name.items()):
        if "$ref" not in schema:
            schemas[name] = schema
            by_name[name] = {"$ref": REF.format(model=name)}

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, by_name)
    return {
        "openapi": "3.1.0",
        "info": {"title": "wabus relay", "version": version, "description": SIGNING},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "wabusKeyId": {"type": "apiKey", "in": "header", "name": "X-Wabus-Key-Id"},
                "wabusTimestamp": {"type": "apiKey", "in": "header", "name": "X-Wabus-Timestamp"},
                "wabusSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Wabus-Signature",
                    "description": "HMAC-SHA256 over timestamp, method, path?query and body "
                    "hash (see the document's description).",
                },
            },
        },
    }


def _body_name(endpoint: Endpoint) -> str:
    name = _name(endpoint.body)
    if isinstance(endpoint.body, type) and name.isidentifier():
        return name
    return endpoint.operation_id[0].upper() + endpoint.operation_id[1:] + "Body"


def _operation(endpoint: Endpoint, by_name: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for param in endpoint.path_params:
        schema: dict[str, Any] = {"type": "string"}
        if param == "instance":
            schema["pattern"] = INSTANCE_ID_PATTERN
        parameters.append({"name": param, "in": "path", "required": True, "schema": schema})
    if endpoint.query is not None:
        query_schema = endpoint.query.model_json_schema()
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": {k: v for k, v in prop.items() if k != "description"},
                    "description": prop.get("description", ""),
                }
            )
    if endpoint.signed:
        parameters.append(
            {
                "name": NONCE,
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "description": "Ignored beyond the signature: makes two identical requests "
                "in one second differ (the second would otherwise be a replay).",
            }
        )
    for header in endpoint.headers:
        parameters.append(
            {
                "name": header,
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                    "maxLength": COMMAND_ID_MAX,
                },
                "description": "Becomes the command id: a retry with the same key is no "
                "second command.",
            }
        )
    responses: dict[str, Any] = {}
    for status, reply in endpoint.replies.items():
        content: dict[str, Any] = {}
        if reply.model is not None:
            content[reply.media_type] = {"schema": by_name[_name(reply.model)]}
        elif reply.media_type != "application/json":
            content[reply.media_type] = {"schema": {"type": "string", "format": "binary"}}
        elif status >= 400:
            content[PROBLEM_JSON] = {"schema": by_name["ProblemDetails"]}
        responses[str(status)] = {"description": reply.description} | (
            {"content": content} if content else {}
        )
    errors = dict(_SIGNED_ERRORS) if endpoint.signed else {}
    if endpoint.body is not None:
        errors |= _BODY_ERRORS
    if "instance" in endpoint.path_params:
        errors |= _INSTANCE_ERRORS
    for status, description in errors.items():
        responses.setdefault(
            str(status),
            {
                "description": description,
                "content": {PROBLEM_JSON: {"schema": by_name["ProblemDetails"]}},
            },
        )
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": parameters,
        "responses": dict(sorted(responses.items())),
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    if endpoint.deprecated:
        operation["deprecated"] = True
    if endpoint.signed:
        operation["security"] = [{"wabusKeyId": [], "wabusTimestamp": [], "wabusSignature": []}]
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": by_name[_body_name(endpoint)]}},
        }
    return operation
