"""Queries to the connector that runs an instance (`schemas.queries`): the port the routes ask
through, and its NATS adapter, one request on `<prefix>.req.<instance>.<query>`.

The port answers the connector's `QueryAnswer` as it is (refusals included: what they mean is
the route's business) or raises one of the `QueryError`s below; a failure of the bus itself
comes through as `nats.errors.Error`, which the app answers 503 `bus_unavailable` as for every
other port.
"""

from __future__ import annotations

from typing import Any, Protocol

import pydantic_core
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from schemas.queries import QueryAnswer
from schemas.subjects import Topology


class QueryError(Exception):
    """A query that got no usable answer."""


class NoResponders(QueryError):
    """Nothing subscribes to the instance's query subject: no connector runs the instance."""


class QueryTimeout(QueryError):
    """A connector took the query but did not answer within the timeout."""


class UnreadableAnswer(QueryError):
    """The connector answered something that is not a `QueryAnswer`."""


class QueryPort(Protocol):
    """Ask the connector running an instance, and wait (bounded) for its answer."""

    async def ask(
        self, instance: str, name: str, payload: dict[str, Any], seconds: float
    ) -> QueryAnswer:
        """The answer to query `name` (a key of `schemas.queries.QUERIES`) with `payload` (its
        request model as JSON data). `NoResponders`, `QueryTimeout` once `seconds` have passed,
        `UnreadableAnswer`."""


class NatsQueries:
    """Core NATS request/reply: the connector subscribes to the query subjects of the instances
    it runs, so "no responders" means none runs this one."""

    def __init__(self, nc: NATS, topology: Topology) -> None:
        self._nc = nc
        self._topology = topology

    async def ask(
        self, instance: str, name: str, payload: dict[str, Any], seconds: float
    ) -> QueryAnswer:
        subject = self._topology.query(instance, name)
        body = pydantic_core.to_json(payload)
        try:
            reply = await self._nc.request(subject, body, timeout=seconds)
        except NoRespondersError as error:
            raise NoResponders(subject) from error
        except NatsTimeoutError as error:
            if not self._nc.is_connected:
                raise  # the bus went away, not the connector: 503 like any bus failure
            raise QueryTimeout(subject) from error
        try:
            return QueryAnswer.model_validate_json(reply.data)
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "answer"
            raise UnreadableAnswer(f"{where}: {first['msg']}") from error


def _conformance(nc: NATS) -> None:
    """Never called: mypy checks here that the adapter is the port."""
    _queries: QueryPort = NatsQueries(nc, Topology())
