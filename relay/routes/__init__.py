"""The `/v1` routes, one module per resource."""

from starlette.routing import BaseRoute

from relay.routes import messages

V1_ROUTES: list[BaseRoute] = [*messages.routes]
