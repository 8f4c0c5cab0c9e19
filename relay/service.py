"""`python -m relay`: uvicorn serving the app factory, the settings read from the environment."""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from relay.app import create_app
from wabus.logs import configure_logging
from wabus.settings import Settings


def app_from_environment() -> Starlette:
    """The factory each uvicorn worker process calls: settings and logging from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


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
    )
