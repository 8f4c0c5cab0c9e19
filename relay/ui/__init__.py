"""The dashboard, served by the relay under `/ui`: server-rendered pages (Jinja2), a vendored
htmx for the parts that refresh themselves, server-sent events for live events; no CDN.

It runs the signed routes' own handlers in process (`relay.ui.calls`), behind its own login
(`relay.ui.auth`). Without `WABUS_DASHBOARD_PASSWORD` (or `wabus dev`'s one-time link) it is
off, and every page under `/ui` says how to turn it on.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from relay.ui import deliveries, events, instances, login
from relay.ui.auth import Gate
from relay.ui.web import Ui, make_templates
from wabus.settings import Settings

_STATIC = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
    "htmx.LICENSE.txt": "text/plain; charset=utf-8",
}


def _static_routes() -> list[Route]:
    def serve(name: str, media_type: str) -> Route:
        body = resources.files("relay.ui").joinpath("static", name).read_bytes()

        async def static(request: Request) -> Response:
            return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

        return Route(f"/static/{name}", static, methods=["GET"])

    return [serve(name, media_type) for name, media_type in _STATIC.items()]


def dashboard_routes(settings: Settings) -> list[BaseRoute]:
    """`/` (a redirect) and everything under `/ui`."""
    ui = Ui(Gate(settings), make_templates())

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    if ui.gate.enabled:
        pages = [
            *login.routes(ui),
            *instances.routes(ui),
            *events.routes(ui),
            *deliveries.routes(ui),
        ]
    else:

        async def off(request: Request) -> Response:
            return ui.page(request, "off.html", 404)

        pages = [Route("/{path:path}", off, methods=["GET", "POST"])]
    return [
        Route("/", root, methods=["GET"]),
        Route("/ui", root_ui, methods=["GET"]),
        Mount("/ui", routes=[*_static_routes(), *pages]),
    ]


async def root_ui(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)
