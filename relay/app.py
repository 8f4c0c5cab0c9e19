"""The relay's app factory: routes from declarative lists, I/O opened only in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Mount
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from relay.delivery.service import Deliveries, open_delivery_log
from relay.endpoints import routes_of
from relay.middleware.deadline import BodyDeadlineMiddleware
from relay.middleware.guard import FailedAuthGuard
from relay.middleware.hygiene import HygieneMiddleware
from relay.problems import EXCEPTION_HANDLERS
from relay.ratelimit import RateLimiter
from relay.replay import ReplayGuard
from relay.routes import ENDPOINTS, V1_ROUTES
from relay.routes.docs import docs_routes
from relay.routes.legacy import health_route
from relay.state import RelayState
from wabus.buckets import open_instance_buckets
from wabus.health import health_routes
from wabus.logs import get_logger
from wabus.natsbus import connect, ensure_streams, streams_present
from wabus.settings import Settings

log = get_logger(__name__)


async def _readiness(request: Request) -> dict[str, bool]:
    state: RelayState = request.state.relay
    connected = state.nc.is_connected
    return {
        "nats": connected,
        "streams": connected and await streams_present(state.js, state.settings),
    }


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the relay. With no settings they are read from the environment (uvicorn's factory)."""
    settings = settings or Settings()
    if not settings.api_keys:
        log.warning("WABUS_API_KEYS is empty: every signed route will answer 401")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        nc = await connect(settings, "wabus-relay")
        js = nc.jetstream()
        await ensure_streams(js, settings)
        replay = await ReplayGuard.open(nc, js, settings.topology)
        buckets = await open_instance_buckets(
            js, settings.topology, replicas=settings.stream_replicas
        )
        state = RelayState(
            settings,
            settings.keys,
            nc,
            js,
            replay,
            RateLimiter(settings.rate_limit, settings.rate_burst),
            config=buckets.config,
            status=buckets.status,
            sends=buckets.sends,
            deliveries=await Deliveries.open(js, settings, await open_delivery_log(settings)),
        )
        stop = asyncio.Event()
        delivering = asyncio.create_task(state.deliveries.run(stop))
        try:
            yield {"relay": state}
        finally:
            stop.set()
            await delivering
            await nc.drain()

    return Starlette(
        routes=[
            *routes_of(ENDPOINTS),
            *health_routes(_readiness),
            health_route,
            *docs_routes(ENDPOINTS),
            Mount("/v1", routes=V1_ROUTES),
        ],
        middleware=_middleware(settings),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def _middleware(settings: Settings) -> list[Middleware]:
    """Outermost first: the client address is settled first (trusted proxies only), the request
    id covers everything, CORS answers preflights itself and adds its headers to the guard's
    429, the body deadline sits next to the routes that read bodies."""
    stack = []
    if settings.trusted_proxies:  # uvicorn's own: the rightmost untrusted X-Forwarded-For entry
        trusted = [str(network) for network in settings.trusted_proxies]
        stack.append(Middleware(ProxyHeadersMiddleware, trusted_hosts=trusted))
    stack.append(Middleware(HygieneMiddleware))
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=[
                    "Content-Type",
                    "Idempotency-Key",
                    "X-Request-Id",
                    "X-Wabus-Key-Id",
                    "X-Wabus-Timestamp",
                    "X-Wabus-Signature",
                ],
                expose_headers=["X-Request-Id", "Retry-After"],
                max_age=600,
            )
        )
    stack.append(
        Middleware(
            FailedAuthGuard,
            limit=settings.auth_failure_limit,
            window=settings.auth_failure_window,
        )
    )
    stack.append(Middleware(BodyDeadlineMiddleware, seconds=settings.body_timeout))
    return stack
