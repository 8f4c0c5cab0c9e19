"""Reading the instance stores for the routes: configuration and status, or a clear 404."""

from __future__ import annotations

from pydantic import ValidationError

from relay.problems import Problem
from relay.state import RelayState
from schemas.instances import InstanceConfig, InstanceStatus
from wabus.logs import get_logger

log = get_logger(__name__)


async def load_config(state: RelayState, instance: str) -> tuple[InstanceConfig, int]:
    """The instance's configuration and revision; 404 `unknown_instance` when there is none."""
    found = await state.stores.instances.get(instance)
    if found is None:
        raise Problem(404, "unknown_instance", f"no instance {instance!r}")
    try:
        return InstanceConfig.model_validate_json(found.value), found.revision
    except ValidationError as error:
        # written on NATS by something other than this API: say so, never a 500
        log.error("stored instance config does not validate", instance=instance, error=str(error))
        raise Problem(
            409,
            "invalid_stored_config",
            f"the stored configuration of {instance!r} does not validate; "
            "delete the instance and create it again",
        ) from error


async def load_status(state: RelayState, instance: str) -> InstanceStatus | None:
    """What the connector last reported, or None when it has not reported yet (or wrote
    something unreadable, which is logged)."""
    found = await state.stores.status.get(instance)
    if found is None:
        return None
    try:
        return InstanceStatus.model_validate_json(found)
    except ValidationError as error:
        log.error("stored instance status does not validate", instance=instance, error=str(error))
        return None
