"""`python -m relay`: uvicorn serving the app factory, the settings read from the environment."""

from __future__ import annotations

import gc

import uvicorn
from starlette.applications import Starlette

from relay.app import create_app
from wabus.deadlines import DeadlineProtocol
from wabus.logs import configure_logging
from wabus.settings import Settings


class RelayProtocol(DeadlineProtocol):
    """The relay's connections: head and body deadlines from the settings.

    A class of this module (not one made per call) because uvicorn pickles its configuration
    into each worker process; each worker sets the values when it builds the app."""


def app_from_environment() -> Starlette:
    """The factory each uvicorn worker process calls: settings and logging from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    RelayProtocol.header_timeout = settings.header_timeout
    RelayProtocol.body_timeout = settings.body_timeout
    app = create_app(settings)
    # What is loaded and built by now (modules, models, the app) lives as long as the process:
    # frozen out of the collector's sight, a full collection scans only what requests create.
    # Under sends at 1,000/s full collections took 18-44 ms each, a stall of every request in
    # flight and most of the p99 (docs/api.md).
    gc.freeze()
    return app


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        "relay.service:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.relay_workers,
        log_config=None,
        access_log=False,  # never emitted (`wabus.logs`), yet its arguments were built per request
        http=RelayProtocol,
        proxy_headers=False,  # X-Forwarded-For only from WABUS_TRUSTED_PROXIES (relay.app)
    )
