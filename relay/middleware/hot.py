"""The hot path's router: endpoints marked `hot` (the signed send) are matched and served by
`relay.middleware.edge`, innermost of its pass, which runs outside Starlette's own layers
(`relay.app.RelayApp`): a signed send never enters Starlette's server-error and exception
middleware or its router.

Why: on a signed send those layers, the route's request/response wrapper and their send
wrappers cost more relay CPU than the signature check and the validation together (the profile
in docs/api.md). The endpoint is the same `Endpoint` and its gate the same code
(`Endpoint.serve`); its errors go to the same handlers (`relay.problems`), the unexpected ones
too — answered 500 `internal_error`, then raised on to the server, as Starlette's server-error
middleware does for any other route. Starlette keeps the route too (the other methods on its
path reach Starlette's router).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from relay.endpoints import Endpoint
from relay.problems import EXCEPTION_HANDLERS, ErrorHandler


class HotRoutes:
    """The `hot` endpoints' patterns; `relay.middleware.edge` serves a match itself."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Endpoint]] = [
            (endpoint.method, compile_path(endpoint.path)[0], endpoint)
            for endpoint in endpoints
            if endpoint.hot
        ]

    def match(self, scope: Scope) -> Endpoint | None:
        """The hot endpoint `scope` is for (its path parameters set in the scope), or None."""
        if scope.get("root_path"):
            return None
        for method, pattern, endpoint in self.routes:
            if scope["method"] == method and (found := pattern.match(scope["path"])):
                scope["path_params"] = found.groupdict()
                return endpoint
        return None


async def serve(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint's answer, its errors to the app's handlers as Starlette's exception and
    server-error middleware would send them."""
    try:
        response = await endpoint.serve(scope, receive)
    except Exception as error:  # answered by its registered handler
        handler = _handler_for(error)
        response = await handler(Request(scope, receive), error)
        if handler is EXCEPTION_HANDLERS[Exception]:
            await response(scope, receive, send)
            raise  # as Starlette's server-error middleware does: the server logs it too
    await response(scope, receive, send)


def _handler_for(error: Exception) -> ErrorHandler:
    """The app's handler for `error`'s class, as Starlette's middleware picks it."""
    for cls in type(error).__mro__:
        if cls in EXCEPTION_HANDLERS:
            return EXCEPTION_HANDLERS[cls]
    return EXCEPTION_HANDLERS[Exception]
