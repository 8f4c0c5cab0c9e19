"""The relay's routes: signed API endpoints declared as data (`ENDPOINTS`, which also make the
OpenAPI document), the legacy Node API, and the unsigned documentation routes.

`V1_ROUTES` holds plain Starlette routes mounted under `/v1`, for what does not fit an `Endpoint`
(none so far); everything else is one.
"""

from starlette.routing import BaseRoute

from relay.endpoints import Endpoint
from relay.routes import (
    chats,
    contacts,
    deliveries,
    groups,
    instances,
    legacy,
    media,
    messages,
    session,
    status,
)

ENDPOINTS: list[Endpoint] = [
    *messages.endpoints,  # first: the hot path is matched before any other route
    *instances.endpoints,
    *status.endpoints,
    *session.endpoints,
    *chats.endpoints,
    *contacts.endpoints,
    *groups.endpoints,
    *media.endpoints,
    *deliveries.endpoints,
    *legacy.endpoints,
]

V1_ROUTES: list[BaseRoute] = []
