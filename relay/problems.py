"""Errors as `application/problem+json` (RFC 9457), each with a stable `code`.

Routes raise `Problem`; the app translates it once, at the edge. Anything unexpected becomes a
plain 500 problem — never a stack trace in a response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import pydantic_core
from nats.errors import Error as NatsError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from wabus.logs import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers


MAX_FIELD_ERRORS = 20
"""`errors` lists at most this many fields (a list of 1,000 bad ids is one mistake, repeated)."""
_DETAIL_ERRORS = 3
_MAX_FIELD = 128
_MAX_MESSAGE = 300


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def field_error(loc: tuple[int | str, ...], message: str, rule: str) -> dict[str, str]:
    """One entry of a problem's `errors`: where (`a.0.b`), what is expected, the rule's id."""
    where = ".".join(str(part) for part in loc) or "body"
    return {
        "field": _clip(where, _MAX_FIELD),
        "message": _clip(message, _MAX_MESSAGE),
        "type": rule,
    }


def field_problem(code: str, errors: list[dict[str, str]], total: int | None = None) -> Problem:
    """A 422 whose detail names the first few fields *and* the rule each broke, as `errors` does
    for (up to `MAX_FIELD_ERRORS` of) all of them."""
    total = len(errors) if total is None else total
    listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:_DETAIL_ERRORS])
    more = total - min(total, _DETAIL_ERRORS)
    detail = f"invalid field(s): {listed}" + (f" (and {more} more in `errors`)" if more else "")
    return Problem(422, code, detail, errors=errors[:MAX_FIELD_ERRORS])


def invalid_body(error: ValidationError, code: str = "invalid_body") -> Problem:
    """A 422 naming every field that failed, in dotted `loc` form, with pydantic's rule."""
    items = error.errors(include_url=False, include_context=False, include_input=False)
    errors = [
        # our own validators raise ValueError with the rule as its text; drop pydantic's prefix
        field_error(item["loc"], item["msg"].removeprefix("Value error, "), item["type"])
        for item in items[:MAX_FIELD_ERRORS]
    ]
    return field_problem(code, errors, len(items))


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 422 `invalid_json` saying where it broke."""
    try:
        return pydantic_core.from_json(body or b"null")
    except ValueError as error:
        raise Problem(422, "invalid_json", f"request body is not valid JSON: {error}") from error


def is_json_media_type(content_type: str | None) -> bool:
    """True for `application/json`, with any parameters but a charset other than UTF-8
    (JSON is UTF-8, RFC 8259)."""
    if not content_type:
        return False
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "application/json":
        return False
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            return False
    return True


def require_json_body(content_type: str | None, body: bytes) -> None:
    """415 `unsupported_media_type` for a body that is not declared `application/json`: a form
    or text body is refused for what it is, not parsed as JSON by chance. An empty body needs
    no Content-Type (the route's own validation says whether it needed one)."""
    if body and not is_json_media_type(content_type):
        shown = _clip(content_type, 64) if content_type else "none"
        raise Problem(
            415,
            "unsupported_media_type",
            f"this route takes a JSON body: send `Content-Type: application/json` (got {shown!r})",
        )


class FieldError(BaseModel):
    field: str = Field(description="Where, dotted: `webhooks.0.url`, `to`; `body` for all of it.")
    message: str = Field(description="The rule it broke, for humans.")
    type: str | None = Field(
        default=None, description="The rule's stable id (pydantic's error type), e.g. `missing`."
    )


class ProblemDetails(BaseModel):
    """The body of every error answer (RFC 9457), as documented in the OpenAPI document."""

    type: str = Field(description="`https://wabus.dev/problems/<code>`.")
    title: str
    status: int
    code: str = Field(description="Stable machine-readable error code; branch on this.")
    detail: str = Field(description="What went wrong, for humans.")
    request_id: str | None = Field(default=None, description="Also in `X-Request-Id`.")
    errors: list[FieldError] | None = Field(
        default=None,
        description="For `invalid_body` / `invalid_query`: each failing field (the first "
        f"{MAX_FIELD_ERRORS}).",
    )


def _titled(status: int) -> str:
    return HTTPStatus(status).phrase


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def problem_response(problem: Problem, request_id: str | None = None) -> Response:
    body: dict[str, Any] = {
        "type": f"https://wabus.dev/problems/{problem.code}",
        "title": _titled(problem.status),
        "status": problem.status,
        "code": problem.code,
        "detail": problem.detail,
    }
    if request_id:
        body["request_id"] = request_id
    if problem.errors:
        body["errors"] = problem.errors
    return JSONResponse(body, problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


async def handle_problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, Problem)
    return problem_response(error, request_id_of(request))


async def handle_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = dict(error.headers) if error.headers else None
    problem = Problem(error.status_code, code, str(error.detail), headers=headers)
    return problem_response(problem, request_id_of(request))


async def handle_client_gone(request: Request, error: Exception) -> Response:
    """The client hung up while its body was being read: nothing was done, no one to answer."""
    log.info("client disconnected before its request was read", path=request.url.path)
    return Response(status_code=499)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path)
    problem = Problem(500, "internal_error", "the relay failed to handle this request")
    return problem_response(problem, request_id_of(request))


async def handle_bus_error(request: Request, error: Exception) -> Response:
    log.warning("nats call failed", path=request.url.path, error=repr(error))
    problem = Problem(
        503,
        "bus_unavailable",
        "NATS did not answer in time; retry (signed anew, with the same Idempotency-Key)",
        headers={"Retry-After": "1"},
    )
    return problem_response(problem, request_id_of(request))


ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
EXCEPTION_HANDLERS: dict[type[Exception], ErrorHandler] = {
    ClientDisconnect: handle_client_gone,
    Problem: handle_problem,
    NatsError: handle_bus_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
