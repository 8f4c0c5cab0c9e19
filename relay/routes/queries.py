"""Queries as routes (`relay.routes.contacts`, `relay.routes.groups`): the query's request model
built from the path and the body, asked of the connector running the instance
(`relay.stores.queries`), and its answer checked against the answer model — or the problem that
says why not. The wait is bounded by `WABUS_QUERY_TIMEOUT`; nothing the connector answers can make
a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from starlette.responses import JSONResponse, Response

from relay.endpoints import Call, Reply
from relay.problems import Problem, field_error, field_problem, invalid_body, parse_json
from relay.state import RelayState
from relay.stores.queries import NoResponders, QueryTimeout, UnreadableAnswer
from schemas.envelope import ContractModel
from schemas.instances import InstanceConfig
from schemas.queries import QUERIES, QUERY_ERRORS, QueryAnswer
from wabus.logs import get_logger

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""A refusal's code passed on as the problem's code; anything else is `connector_error`."""
_MAX_REASON = 500


def query_request(
    call: Call,
    model: type[M],
    *,
    path: tuple[str, ...] = (),
    body: bool = False,
    fixed: Mapping[str, Any] | None = None,
) -> M:
    """`model` from the path parameters named in `path` (the model's fields of those names),
    the JSON body (when `body`) and `fixed` (what the route itself decides). A path part that
    does not validate is 422 `invalid_path`, a body that does not is 422 `invalid_body`; both
    name each field and the rule it broke."""
    given = {name: call.param(name) for name in path} | dict(fixed or {})
    data: Any = parse_json(call.body) if body else {}
    if isinstance(data, dict):
        clashes = sorted(set(data) & set(given))
        if clashes:
            rule = "given by the route's path, not in the body"
            errors = [field_error((name,), rule, "extra_forbidden") for name in clashes]
            raise field_problem("invalid_body", errors)
        data = data | given
    try:
        return model.model_validate(data)
    except ValidationError as error:
        items = error.errors(include_url=False, include_context=False, include_input=False)
        in_path = [item for item in items if item["loc"][:1] and item["loc"][0] in path]
        if in_path:
            errors = [
                field_error(item["loc"], item["msg"].removeprefix("Value error, "), item["type"])
                for item in in_path
            ]
            raise field_problem("invalid_path", errors) from error
        raise invalid_body(error) from error


class NonEmpty(ContractModel):
    """A body that must name at least one field (documented as `minProperties`)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})


def body_model(
    model: type[ContractModel], *path: str, base: type[ContractModel] = ContractModel
) -> type[BaseModel]:
    """What the body of a route whose path gives `path` holds: `model` without those fields
    (documented as the request body; validation uses `model` itself)."""
    fields: Any = {
        name: (field.annotation, field)
        for name, field in model.model_fields.items()
        if name not in path
    }
    body: type[BaseModel] = create_model(
        model.__name__ + "Body", __base__=base, __doc__=model.__doc__, **fields
    )
    return body


async def answer_query(call: Call, name: str, request: BaseModel) -> Response:
    """Ask query `name` of the connector running the call's instance; 200 with its answer."""
    _, answer_model = QUERIES[name]
    instance, timeout = call.instance, call.state.settings.query_timeout
    payload = request.model_dump(mode="json")
    # Asked first: connectors ignore the queries of instances they do not run, so a stopped or
    # unknown instance would otherwise look like a connector that does not answer.
    refusal = await _not_running(call.state, instance)
    if refusal is not None:
        raise refusal
    try:
        answer = await call.state.stores.queries.ask(instance, name, payload, timeout)
    except NoResponders as error:
        raise Problem(
            504,
            "connector_unavailable",
            f"no connector runs instance {instance!r}: is a connector up? (a connector takes "
            "an instance on within moments of its start)",
        ) from error
    except QueryTimeout as error:
        raise Problem(
            504,
            "connector_timeout",
            f"the connector running {instance!r} did not answer {name} within {timeout:g} s "
            "(WABUS_QUERY_TIMEOUT); a change it was asked for may still happen",
        ) from error
    except UnreadableAnswer as error:
        log.warning("unreadable query answer", instance=instance, query=name, error=str(error))
        raise _connector_error(instance, name) from error
    if not answer.ok:
        raise _refusal(instance, name, answer)
    try:
        data = answer_model.model_validate(answer.data if answer.data is not None else {})
    except ValidationError as error:
        log.warning(
            "query answer does not match its model",
            instance=instance,
            query=name,
            errors=error.error_count(),
        )
        raise _connector_error(instance, name) from error
    return JSONResponse(data.model_dump(mode="json"))


async def _not_running(state: RelayState, instance: str) -> Problem | None:
    """Why no connector will answer: no such instance (404), a stopped one (409); None when it
    is configured to run."""
    found = await state.stores.instances.get(instance)
    if found is None:
        return Problem(404, "unknown_instance", f"no instance {instance!r}")
    try:
        stopped = InstanceConfig.model_validate_json(found.value).desired_state == "stopped"
    except ValidationError:
        stopped = False  # said by the instance routes; here it is only a connector that is missing
    if stopped:
        return Problem(
            409,
            "instance_not_open",
            f"instance {instance!r} is stopped: start it (desired_state `running`) to query it",
        )
    return None


def _connector_error(instance: str, name: str) -> Problem:
    return Problem(
        502,
        "connector_error",
        f"the connector running {instance!r} answered {name} with something unreadable "
        "(a connector of another version?); its log says more",
    )


def _refusal(instance: str, name: str, answer: QueryAnswer) -> Problem:
    """The connector's refusal as a problem: its code, the status `QUERY_ERRORS` gives it (502
    for a code it does not list), its reason."""
    reason = (answer.reason or "").strip()
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 1] + "…"
    if answer.code is None or not _CODE.fullmatch(answer.code):
        log.warning("query refused without a readable code", instance=instance, query=name)
        detail = f"the connector running {instance!r} refused {name} without a readable code"
        return Problem(502, "connector_error", detail + (f": {reason}" if reason else ""))
    code = answer.code
    return Problem(QUERY_ERRORS.get(code, 502), code, reason or f"{name} refused: {code}")


def query_replies(
    ok: str, model: type[BaseModel], codes: Mapping[int, str] | None = None
) -> dict[int, Reply]:
    """The documented answers of a query route: `ok` with `model`, the refusals every query may
    meet, and `codes` (status → the route's own refusal codes, added to that status's text)."""
    extra = dict(codes or {})

    def also(status: int) -> str:
        return f"; {extra.pop(status)}" if status in extra else ""

    replies = {
        200: Reply(ok, model),
        403: Reply("`instance_forbidden`: the key is scoped to other instances" + also(403) + "."),
        404: Reply(
            "`unknown_instance`, or `unknown_query` (the connector does not know this query: "
            "an older version)" + also(404) + "."
        ),
        409: Reply(
            "`instance_not_open`: the instance is stopped, or its WhatsApp session is not open "
            "(pairing, reconnecting)" + also(409) + "."
        ),
        422: Reply(
            "`invalid_body` or `invalid_path` (each field named, with the rule it broke), "
            "`invalid_json`, or `invalid_query` (the connector refused the request)"
            + also(422)
            + "."
        ),
        502: Reply(
            "`engine_error`: WhatsApp failed the request; `connector_error`: the connector's "
            "answer is unreadable" + also(502) + "."
        ),
        504: Reply(
            "`connector_unavailable`: no connector runs the instance; `connector_timeout`: no "
            "answer within `WABUS_QUERY_TIMEOUT` (10 s by default)" + also(504) + "."
        ),
    }
    for status, text in extra.items():
        replies[status] = Reply(text)
    return replies
