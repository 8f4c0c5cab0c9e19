"""Instances per scoped key: a tenant cannot take the capacity the operator keeps for others.

A key scoped to instances (`id@acme|beta-*:secret`) may hold at most `WABUS_KEY_MAX_INSTANCES`
instances within its scope; a key for every instance (the operator's) has no quota. The count is
read from the configuration bucket, which every relay replica shares, never from memory.

Two creations racing on two replicas: both may pass the count before either writes. So after
writing, the creator counts again by revision (the bucket's sequence orders every write): its
instance stays only if fewer than `quota` instances of the scope were written before it;
otherwise it deletes what it wrote and answers `quota_exceeded`. The earlier write wins, the
later one is withdrawn (a connector may see it appear and vanish within milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.problems import Problem
from relay.stores.ports import InstanceStore, RevisionConflict
from wabus.logs import get_logger
from wabus.settings import ApiKey

log = get_logger(__name__)


@dataclass(frozen=True)
class Held:
    instance: str
    revision: int


async def held_by(instances: InstanceStore, key: ApiKey) -> list[Held]:
    """The instances within `key`'s scope, with the revision of their latest write."""
    revisions = await instances.revisions()
    return [Held(name, revision) for name, revision in revisions.items() if key.allows(name)]


def exceeded(key: ApiKey, quota: int, held: int) -> Problem:
    log.info("instance refused: quota reached", key_id=key.key_id, quota=quota, held=held)
    return Problem(
        409,
        "quota_exceeded",
        f"key {key.key_id!r} may hold {quota} instance(s) (WABUS_KEY_MAX_INSTANCES) and holds "
        f"{held}; delete one first",
    )


async def check_room(instances: InstanceStore, key: ApiKey, quota: int) -> None:
    """Before writing: 409 `quota_exceeded` when the key's scope already holds `quota`."""
    held = len(await held_by(instances, key))
    if held >= quota:
        raise exceeded(key, quota, held)


async def confirm(
    instances: InstanceStore, key: ApiKey, quota: int, instance: str, revision: int
) -> None:
    """After writing `instance` at `revision`: withdraw it and answer 409 when writes racing with
    it took the room first."""
    before = [h for h in await held_by(instances, key) if h.revision < revision]
    if len(before) < quota:
        return
    try:
        await instances.delete(instance, revision)
    except RevisionConflict:
        log.warning(
            "instance over quota changed before it could be withdrawn",
            instance=instance,
            key_id=key.key_id,
        )
    raise exceeded(key, quota, len(before))
