"""What the relay's routes share for the app's lifetime, opened in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from starlette.requests import Request

from relay.ratelimit import RateLimiter
from relay.stores.ports import ReplayGuard, Stores
from wabus.settings import ApiKey, Settings

OpenStores = Callable[[Settings], AbstractAsyncContextManager[Stores]]
"""Opens the stores for the app's lifetime: NATS in production (`relay.stores.nats_open`),
in-memory fakes in the route tests; `create_app` takes either."""


@dataclass
class RelayState:
    settings: Settings
    keys: dict[str, ApiKey]
    limiter: RateLimiter
    """Each key's requests per second (`WABUS_RATE_LIMIT`)."""
    body_limiter: RateLimiter
    """Each key's body bytes per second (`WABUS_RATE_LIMIT_BYTES`): what a request costs the
    relay grows with its body (validating, probing and encoding inline media)."""
    stores: Stores

    @property
    def replay(self) -> ReplayGuard:
        """The replay guard, which the signature check of every signed request consults."""
        return self.stores.replay


def relay_state(request: Request) -> RelayState:
    # from the scope: `request.state` builds a State wrapper first, on every signed request
    state: RelayState = request.scope["state"]["relay"]
    return state
