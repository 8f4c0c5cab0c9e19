"""Errors as `application/problem+json` (RFC 9457), each with a stable `code`.

Routes raise `Problem`; the app translates it once, at the edge. Anything unexpected becomes a
plain 500 problem — never a stack trace in a response.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import ValidationError
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


def invalid_body(error: ValidationError) -> Problem:
    """A 422 naming every field that failed, in JSON-pointer-ish `loc` form."""
    errors = [
        {"field": ".".join(str(part) for part in item["loc"]) or "body", "message": item["msg"]}
        for item in error.errors(include_url=False)
    ]
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return Problem(422, "invalid_body", f"invalid field(s): {fields}", errors=errors)


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 422 `invalid_json` saying where it broke."""
    try:
        return pydantic_core.from_json(body or b"null")
    except ValueError as error:
        raise Problem(422, "invalid_json", f"request body is not valid JSON: {error}") from error


def _titled(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase


def problem_response(problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": f"https://wabus.dev/problems/{problem.code}",
        "title": _titled(problem.status),
        "status": problem.status,
        "code": problem.code,
        "detail": problem.detail,
    }
    if problem.errors:
        body["errors"] = problem.errors
    return JSONResponse(body, problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


async def handle_problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, Problem)
    return problem_response(error)


async def handle_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = dict(error.headers) if error.headers else None
    return problem_response(Problem(error.status_code, code, str(error.detail), headers=headers))


async def handle_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path)
    return problem_response(
        Problem(500, "internal_error", "the relay failed to handle this request")
    )


EXCEPTION_HANDLERS = {
    Problem: handle_problem,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
