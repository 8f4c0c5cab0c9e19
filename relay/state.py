"""What the relay's routes share for the app's lifetime, opened in the lifespan, never at import."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from starlette.requests import Request

from relay.delivery.service import Deliveries
from relay.ratelimit import RateLimiter
from relay.replay import ReplayGuard
from wabus.settings import ApiKey, Settings


@dataclass
class RelayState:
    settings: Settings
    keys: dict[str, ApiKey]
    nc: NATS
    js: JetStreamContext
    replay: ReplayGuard
    limiter: RateLimiter
    config: KeyValue
    """Instance configurations (the relay writes them; the connector watches)."""
    status: KeyValue
    """Instance status (the connector writes it)."""
    sends: KeyValue
    """Send records (the connector writes them)."""
    deliveries: Deliveries
    """Webhook delivery: the endpoints' dispatchers, the delivery log, retries and recovery."""


def relay_state(request: Request) -> RelayState:
    state: RelayState = request.state.relay
    return state
