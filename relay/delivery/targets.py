"""Webhook endpoints as the dispatcher sees them: where to post, which secrets sign, which events.

The global endpoint comes from the environment and receives every instance's events; per-instance
endpoints come from the configuration bucket. Each has a key (`global` or `<instance>/<id>`) that
names it in the delivery log, the API, its durable consumer and its dead letters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase

from relay.delivery.records import GLOBAL_ENDPOINT, endpoint_key
from relay.webhooks.signature import WebhookSecret
from schemas.instances import InstanceConfig, WebhookEndpoint
from schemas.subjects import Topology
from wabus.settings import Settings

GLOBAL_DLQ_NAME = "_global"
"""The global endpoint's token in dead-letter subjects; `_` cannot start an endpoint id."""


@dataclass(frozen=True)
class Target:
    key: str
    url: str
    secret: WebhookSecret
    previous_secret: WebhookSecret | None = None
    """Also signed with during a secret rotation, until `rotation_ends_at` (None: until unset)."""
    rotation_ends_at: datetime | None = None
    events: tuple[str, ...] = ("*",)
    instance: str | None = None
    """The instance whose events this endpoint receives; None for every instance."""
    start: datetime | None = None
    """Deliver events published from this time on when the endpoint's consumer is first created;
    None: the whole history in `WA_EVENTS` (the global endpoint)."""

    def wants(self, event_type: str) -> bool:
        if self.events == ("*",):
            return True
        return any(fnmatchcase(event_type, pattern) for pattern in self.events)

    def secrets(self, now: datetime) -> list[WebhookSecret]:
        """The secrets to sign with now: two signatures while a rotation overlaps."""
        if self.previous_secret is None:
            return [self.secret]
        if self.rotation_ends_at is not None and now >= self.rotation_ends_at:
            return [self.secret]
        return [self.secret, self.previous_secret]

    @property
    def token(self) -> str:
        """This endpoint's token in dead-letter subjects."""
        return GLOBAL_DLQ_NAME if self.instance is None else self.key.split("/", 1)[1]

    @property
    def consumer(self) -> str:
        """The durable consumer's name: a digest, since `/` may not appear in one and keys of
        the form `a-b/c` and `a/b-c` must not meet."""
        return "webhook-" + hashlib.sha256(self.key.encode()).hexdigest()[:24]

    def events_subject(self, topology: Topology) -> str:
        if self.instance is None:
            return topology.all_events
        return f"{topology.prefix}.evt.{self.instance}.>"

    def dead_letters_subject(self, topology: Topology) -> str:
        return f"{topology.prefix}.dlq.{self.instance or '*'}.{self.token}.>"


def global_target(settings: Settings) -> Target | None:
    if not (settings.webhook_url and settings.webhook_secret):
        return None
    previous = settings.webhook_previous_secret
    return Target(
        key=GLOBAL_ENDPOINT,
        url=settings.webhook_url,
        secret=WebhookSecret(settings.webhook_secret.get_secret_value()),
        previous_secret=WebhookSecret(previous.get_secret_value()) if previous else None,
    )


def instance_target(config: InstanceConfig, endpoint: WebhookEndpoint) -> Target:
    return Target(
        key=endpoint_key(config.id, endpoint.id),
        url=endpoint.url,
        secret=WebhookSecret(endpoint.secret),
        previous_secret=WebhookSecret(endpoint.previous_secret)
        if endpoint.previous_secret
        else None,
        rotation_ends_at=endpoint.rotation_ends_at,
        events=tuple(endpoint.events),
        instance=config.id,
        start=config.updated_at,
    )


def instance_targets(config: InstanceConfig) -> list[Target]:
    return [instance_target(config, endpoint) for endpoint in config.webhooks]
