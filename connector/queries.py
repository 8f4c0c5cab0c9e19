"""Queries answered by the connector that runs the instance (`schemas.queries`).

Every connector subscribes to `<prefix>.req.*.*`; only the one holding the instance's session
answers, the others stay silent, so a request for an instance nobody runs times out at the
asker (the relay's `504 connector_timeout`). An answer is always a `QueryAnswer`: a query with
an unknown name, an invalid body, a session that is not open (`instance_not_open`, after a
short wait for a reconnect) or an engine failure is answered with its code, never left to time
out. Each request runs in a task of its own: one slow query does not hold up the others.
"""

from __future__ import annotations

import asyncio
import base64

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from connector.engine import QueryError
from connector.images import MAX_IMAGE_PIXELS, group_photo_jpeg
from connector.instances import InstanceManager
from connector.metrics import ERRORS
from connector.supervisor import NotConnected
from schemas.envelope import ContractModel
from schemas.queries import QUERIES, GroupSettings, QueryAnswer
from schemas.subjects import Topology, parse_subject
from wabus.conversion import in_turn
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

OPEN_WAIT = 2.0
"""How long a query waits for a session that is reconnecting before `instance_not_open`."""
ENGINE_TIMEOUT = 30.0
"""The longest an engine may take to answer; past it, `engine_error`."""


async def answer(instances: InstanceManager, instance: str, name: str, body: bytes) -> QueryAnswer:
    """The answer to one query of `instance` (run by this connector)."""
    models = QUERIES.get(name)
    if models is None:
        return QueryAnswer(ok=False, code="unknown_query", reason=f"no query named {name!r}")
    request_model, _ = models
    try:
        request = request_model.model_validate_json(body or b"{}")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
            for item in error.errors(include_input=False)
        )
        return QueryAnswer(ok=False, code="invalid_query", reason=problems)
    try:
        request = await _prepared(request)
    except QueryError as error:
        return QueryAnswer(ok=False, code=error.code, reason=error.reason)
    supervisor = instances.supervisors.get(instance)
    if supervisor is None:  # stopped (or handed to another connector) since the request came
        return QueryAnswer(ok=False, code="instance_not_open", reason="the instance was stopped")
    try:
        session = await supervisor.open_session(OPEN_WAIT)
    except (TimeoutError, NotConnected) as error:
        reason = str(error) if isinstance(error, NotConnected) else "the session is reconnecting"
        return QueryAnswer(ok=False, code="instance_not_open", reason=reason)
    try:
        result = await asyncio.wait_for(session.query(name, request), ENGINE_TIMEOUT)
    except QueryError as error:
        return QueryAnswer(ok=False, code=error.code, reason=error.reason)
    except TimeoutError:
        return QueryAnswer(ok=False, code="engine_error", reason="WhatsApp did not answer in time")
    return QueryAnswer(ok=True, data=result.model_dump(mode="json", by_alias=True))


async def _prepared(request: ContractModel) -> ContractModel:
    """The request as the engine gets it: a group photo re-encoded as WhatsApp's JPEG (the
    caller may send a PNG, WebP or GIF), in a thread, in turn (`wabus.conversion.in_turn`)."""
    if not isinstance(request, GroupSettings) or request.photo_base64 is None:
        return request
    jpeg = await in_turn(group_photo_jpeg, base64.b64decode(request.photo_base64))
    if jpeg is None:
        raise QueryError(
            "invalid_query",
            "photo_base64: not a JPEG, PNG, WebP or GIF image that can be read (or more than "
            f"{MAX_IMAGE_PIXELS} pixels)",
        )
    return request.model_copy(update={"photo_base64": base64.b64encode(jpeg).decode()})


async def subscribe_queries(
    nc: NATS, topology: Topology, instances: InstanceManager
) -> Subscription:
    tasks: set[asyncio.Task[None]] = set()

    async def respond(message: Msg, instance: str, name: str) -> None:
        try:
            reply = await answer(instances, instance, name, message.data)
        except Exception as error:
            ERRORS.labels("query").inc()
            log.exception("query failed", instance=instance, query=name)
            reply = QueryAnswer(ok=False, code="engine_error", reason=type(error).__name__)
        if not reply.ok:
            log.info("query refused", instance=instance, query=name, code=reply.code)
        try:
            await message.respond(reply.model_dump_json().encode())
        except UNAVAILABLE as error:
            log.warning("query answer not sent", instance=instance, query=name, error=repr(error))

    async def on_query(message: Msg) -> None:
        try:
            _, instance, name = parse_subject(message.subject)
        except ValueError:
            return
        if instance not in instances.supervisors or not message.reply:
            return  # another connector's instance, or nobody to answer
        task = asyncio.create_task(respond(message, instance, name))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await nc.subscribe(topology.query("*", "*"), cb=on_query)
