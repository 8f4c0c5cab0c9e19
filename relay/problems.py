"""Errors as `application/problem+json` (RFC 9457), each with a stable `code`.

Routes raise `Problem`; the app translates it once, at the edge. Anything unexpected becomes a
plain 500 problem — never a stack trace in a response.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pydantic_core
from nats.errors import Error as NatsError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
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


def invalid_body(error: ValidationError, code: str = "invalid_body") -> Problem:
    """A 422 naming every field that failed, in JSON-pointer-ish `loc` form."""
    errors = [
        {"field": ".".join(str(part) for part in item["loc"]) or "body", "message": item["msg"]}
        for item in error.errors(include_url=False)
    ]
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return Problem(422, code, f"invalid field(s): {fields}", errors=errors)


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 422 `invalid_json` saying where it broke."""
    try:
        return pydantic_core.from_json(body or b"null")
    except ValueError as error:
        raise Problem(422, "invalid_json", f"request body is not valid JSON: {error}") from error


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDetails(BaseModel):
    """The body of every error answer (RFC 9457), as documented in the OpenAPI document."""

    type: str = Field(description="`https://wabus.dev/problems/<code>`.")
    title: str
    status: int
    code: str = Field(description="Stable machine-readable error code; branch on this.")
    detail: str = Field(description="What went wrong, for humans.")
    request_id: str | None = Field(default=None, description="Also in `X-Request-Id`.")
    errors: list[FieldError] | None = Field(
        default=None, description="For `invalid_body` / `invalid_query`: each failing field."
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


EXCEPTION_HANDLERS = {
    Problem: handle_problem,
    NatsError: handle_bus_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
