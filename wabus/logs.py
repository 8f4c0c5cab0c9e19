"""Structured logging with structlog: JSON lines in production, readable lines in a terminal.

Standard-library loggers (uvicorn, nats, neonize's Go bridge) are routed through the same
renderer, so every line has one shape whatever library wrote it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from yarl import URL

from wabus.settings import LogFormat


def configure_logging(level: str = "INFO", fmt: LogFormat = LogFormat.JSON) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def shown_url(url: str) -> str:
    """A URL (or a comma-separated list, as NATS_URL may be) as it may be printed: without the
    user, password or token it may carry."""
    return ",".join(_without_credentials(one.strip()) for one in url.split(","))


def _without_credentials(url: str) -> str:
    try:
        parsed = URL(url)
        hidden = parsed.user is not None or parsed.password is not None
    except ValueError:
        return "(a URL that does not parse)"
    if not hidden:
        return url
    return str(parsed.with_user(None)).replace("://", "://…@", 1)
