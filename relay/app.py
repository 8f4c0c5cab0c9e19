"""The relay's app factory: routes from declarative lists, I/O opened only in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Mount
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from relay.endpoints import routes_of
from relay.middleware.edge import Edge
from relay.problems import EXCEPTION_HANDLERS
from relay.ratelimit import RateLimiter
from relay.routes import ENDPOINTS, V1_ROUTES
from relay.routes.docs import docs_routes
from relay.routes.legacy import health_route
from relay.state import OpenStores, RelayState, relay_state
from relay.stores.nats_open import open_nats_stores
from relay.ui import dashboard_routes
from wabus.health import health_routes
from wabus.logs import get_logger
from wabus.settings import Settings

log = get_logger(__name__)


async def _readiness(request: Request) -> dict[str, bool]:
    return await relay_state(request).stores.health.checks()


def create_app(
    settings: Settings | None = None, open_stores: OpenStores = open_nats_stores
) -> Starlette:
    """Build the relay. With no settings they are read from the environment (uvicorn's factory).
    `open_stores` opens what the routes reach beyond the process: NATS unless a test passes
    its fakes."""
    settings = settings or Settings()
    if not settings.api_keys:
        log.warning("WABUS_API_KEYS is empty: every signed route will answer 401")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_stores(settings) as stores:
            limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
            bodies = RateLimiter(settings.rate_limit_bytes, settings.rate_burst_bytes)
            yield {"relay": RelayState(settings, settings.keys, limiter, bodies, stores)}

    return RelayApp(
        routes=[
            *routes_of(ENDPOINTS),
            *health_routes(_readiness),
            health_route,
            *docs_routes(ENDPOINTS),
            Mount("/v1", routes=V1_ROUTES),
            *dashboard_routes(settings),
        ],
        edge=_edge(settings),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


class RelayApp(Starlette):
    """Starlette with the relay's edge (`relay.middleware.edge`) outside its own layers: the
    hot send is served there, before Starlette's server-error and exception middleware and
    its router, which every other request goes on through."""

    def __init__(self, *, edge: Callable[[ASGIApp], ASGIApp], **options: Any) -> None:
        super().__init__(**options)
        self._edge = edge

    def build_middleware_stack(self) -> ASGIApp:
        return self._edge(super().build_middleware_stack())


def _edge(settings: Settings) -> Callable[[ASGIApp], ASGIApp]:
    """The client address is settled first (trusted proxies only), then one pass
    (`relay.middleware.edge`): request id, CORS, failed-auth guard, body deadline and the hot
    path's router."""
    cors = None
    if settings.cors_origins:
        cors = {
            "allow_origins": settings.cors_origins,
            "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
            "allow_headers": [
                "Content-Type",
                "Idempotency-Key",
                "X-Request-Id",
                "X-Wabus-Key-Id",
                "X-Wabus-Timestamp",
                "X-Wabus-Signature",
            ],
            "expose_headers": ["X-Request-Id", "Retry-After"],
            "max_age": 600,
        }
    # uvicorn's own: the rightmost untrusted X-Forwarded-For entry is the client
    trusted = [str(network) for network in settings.trusted_proxies]
    proxies = Middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)

    def wrap(app: ASGIApp) -> ASGIApp:
        edge = Edge(
            app,
            cors=cors,
            auth_failure_limit=settings.auth_failure_limit,
            auth_failure_window=settings.auth_failure_window,
            body_timeout=settings.body_timeout,
            endpoints=ENDPOINTS,
        )
        if not trusted:
            return edge
        cls, args, options = proxies  # as Starlette builds its middleware
        settled: ASGIApp = cls(edge, *args, **options)
        return settled

    return wrap
