"""The dashboard's actions run the signed routes' own handlers, in process, as the operator
(no API key scope): one code path per action, whether it comes from the API or a browser.

A handler's `Problem` comes back as `Failed`, which the pages show by title and code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from starlette.types import Scope

from relay.endpoints import Call, Handler
from relay.problems import Problem
from relay.state import RelayState


@dataclass(frozen=True)
class Failed:
    """A problem as the dashboard shows it."""

    status: int
    code: str
    detail: str

    @property
    def title(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"

    @classmethod
    def of(cls, problem: Problem) -> Failed:
        return cls(problem.status, problem.code, problem.detail)


def _scope(path_params: dict[str, str]) -> Scope:
    """A request scope that carries only what handlers read from one: path parameters (and no
    `Idempotency-Key`, so each action gets a new command id)."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/ui",
        "headers": [],
        "query_string": b"",
        "path_params": path_params,
    }


async def invoke(
    handler: Handler,
    state: RelayState,
    *,
    body: Any = None,
    query: BaseModel | None = None,
    **path_params: str,
) -> Any:
    """Run `handler` as the operator; its JSON answer (None for an empty one).
    `Problem` propagates: the caller shows it (`Failed.of`)."""
    raw = b"" if body is None else json.dumps(body).encode()
    response = await handler(Call(_scope(path_params), state, raw, None, query))
    content = bytes(response.body)
    return json.loads(content) if content else None
