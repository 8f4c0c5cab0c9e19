"""Unsigned documentation routes: `/openapi.json` and a docs page that renders it.

The page is three small files served by the relay itself — no CDN, no third-party script —
so it works offline and under a strict Content-Security-Policy.
"""

from __future__ import annotations

from importlib import metadata, resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.endpoints import Endpoint
from relay.openapi import openapi_document

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; frame-ancestors 'none'"
)
_STATIC = {
    "/docs": ("docs.html", "text/html; charset=utf-8"),
    "/docs/docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "/docs/docs.css": ("docs.css", "text/css; charset=utf-8"),
}


def _version() -> str:
    try:
        return metadata.version("wabus")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def docs_routes(endpoints: list[Endpoint]) -> list[Route]:
    document = openapi_document(endpoints, _version())

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    def static(path: str, name: str, media_type: str) -> Route:
        body = resources.files("relay").joinpath("static", name).read_bytes()

        async def serve(request: Request) -> Response:
            return Response(
                body, media_type=media_type, headers={"Content-Security-Policy": DOCS_CSP}
            )

        return Route(path, serve, methods=["GET"])

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        *(static(path, name, media_type) for path, (name, media_type) in _STATIC.items()),
    ]
