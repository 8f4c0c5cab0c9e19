"""Publishing a command to `WA_COMMANDS`: the envelope, its id (which the bus deduplicates by),
and the checks that turn bus trouble into a clear 4xx/503 instead of a 500."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from relay.problems import Problem
from relay.state import RelayState
from relay.stores.ports import PayloadTooLarge
from schemas.envelope import encode_parts, timestamp_now
from schemas.ids import (
    COMMAND_ID_RULE,
    command_id_problem,
    is_command_id,
    is_instance_id,
    new_command_id,
)
from wabus.logs import get_logger

log = get_logger(__name__)


def command_id_from(headers: Mapping[str, str]) -> str:
    """The `Idempotency-Key` when given (it becomes the command id), else a new id.

    Checked against the identifier rule here, where it enters: a key NATS cannot store as part of
    a send record key would otherwise be published and only fail inside the connector."""
    key = headers.get("idempotency-key")
    if key is None:
        return new_command_id()
    problem = command_id_problem(key)
    if problem is not None:
        log.info("idempotency key refused", reason=problem, length=len(key))
        raise Problem(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key is {COMMAND_ID_RULE}: {problem}",
        )
    return key


async def publish_command(
    state: RelayState, instance: str, name: str, data: dict[str, Any] | BaseModel, command_id: str
) -> bool:
    """Publish and wait for JetStream's ack: once this returns, the command is durable.
    True when JetStream recognised the command id as a duplicate (an idempotent retry)."""
    # Every part was validated already (ids, the command model): construct, don't re-validate.
    # The ids are checked once more because they become NATS names: a caller that skipped
    # `command_id_from` must get a 4xx, not a command the connector can never store.
    if not is_command_id(command_id):
        raise Problem(400, "invalid_idempotency_key", f"a command id is {COMMAND_ID_RULE}")
    if not is_instance_id(instance):
        raise Problem(404, "unknown_instance", f"no instance {instance!r}")
    payload = encode_parts(command_id, name, instance, timestamp_now(), data)
    bus = state.stores.commands
    limit = bus.max_payload
    if len(payload) > limit:
        raise Problem(
            413,
            "command_too_large",
            f"the command is {len(payload)} bytes, over the NATS server's max_payload of "
            f"{limit}; send media by `url`, or raise max_payload on the server",
        )
    try:
        return await bus.publish(
            state.settings.topology.command(instance, name), payload, command_id
        )
    except PayloadTooLarge as error:
        raise Problem(413, "command_too_large", str(error)) from error
