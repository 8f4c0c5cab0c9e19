"""Subject, stream and bucket names, all derived from one configurable prefix.

With the default prefix `wa`: events on `wa.evt.<instance>.<type>`, commands on
`wa.cmd.<instance>.<command>`, sim controls on `wa.sim.<instance>.<action>`, and the streams
`WA_EVENTS`, `WA_COMMANDS`, `WA_DLQ`. A different prefix gives a disjoint set of names, which is how
tests (and tenants sharing one NATS account) keep out of each other's way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "wa"
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Topology:
    """Every NATS name wabus uses, for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise ValueError(f"subject prefix must match {_PREFIX.pattern}, got {self.prefix!r}")

    # subjects
    def event(self, instance: str, event_type: str) -> str:
        return f"{self.prefix}.evt.{instance}.{event_type}"

    def command(self, instance: str, command: str) -> str:
        return f"{self.prefix}.cmd.{instance}.{command}"

    def query(self, instance: str, name: str) -> str:
        """A request that needs an answer (`schemas.queries`), to the instance's connector."""
        return f"{self.prefix}.req.{instance}.{name}"

    def sim(self, instance: str, action: str) -> str:
        return f"{self.prefix}.sim.{instance}.{action}"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.evt.>"

    @property
    def all_commands(self) -> str:
        return f"{self.prefix}.cmd.>"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dlq.>"

    def dead_letter(self, instance: str, endpoint: str, event_type: str) -> str:
        """Where an event that exhausted its attempts at `endpoint` (an endpoint id, or
        `_global`) is kept."""
        return f"{self.prefix}.dlq.{instance}.{endpoint}.{event_type}"

    @property
    def all_sim_controls(self) -> str:
        return f"{self.prefix}.sim.*.*"

    # streams, buckets
    @property
    def _upper(self) -> str:
        return self.prefix.upper()

    @property
    def events_stream(self) -> str:
        return f"{self._upper}_EVENTS"

    @property
    def commands_stream(self) -> str:
        return f"{self._upper}_COMMANDS"

    @property
    def dlq_stream(self) -> str:
        return f"{self._upper}_DLQ"

    @property
    def replay_bucket(self) -> str:
        """Signatures seen by the relay, kept for the timestamp tolerance window."""
        return f"{self.prefix}_replay"

    @property
    def config_bucket(self) -> str:
        """Instance configuration (desired state, webhooks), key = instance id; written by the
        relay or any NATS client, watched by the connector."""
        return f"{self.prefix}_instances"

    @property
    def status_bucket(self) -> str:
        """Instance runtime status (state, reason, QR), key = instance id; the connector
        writes it."""
        return f"{self.prefix}_status"

    @property
    def leases_bucket(self) -> str:
        """Which connector owns which instance, key = instance id, entries with a TTL."""
        return f"{self.prefix}_leases"

    @property
    def sends_bucket(self) -> str:
        """Send records, key = `<instance>.<command id>`: idempotency and the send-status route."""
        return f"{self.prefix}_sends"

    @property
    def messages_bucket(self) -> str:
        """What the connector saw of each message (sender, time, content, a poll's secret), key
        = `<instance>.<message id>`, entries with a TTL: quotes, reactions in groups, edits,
        forwards and poll votes need it."""
        return f"{self.prefix}_messages"

    @property
    def endpoints_bucket(self) -> str:
        """Runtime state of webhook endpoints (disabled after a 410, …), key = endpoint id."""
        return f"{self.prefix}_endpoints"

    @property
    def webhook_leases_bucket(self) -> str:
        """Which relay delivers to which webhook endpoint, key = endpoint key, entries with a
        TTL: one relay at a time per endpoint keeps each chat's events in order."""
        return f"{self.prefix}_webhook_leases"

    @property
    def webhook_attempts_bucket(self) -> str:
        """How many requests an event being retried has had at an endpoint, key =
        `<consumer>.<stream sequence>`: attempts count requests, not redeliveries."""
        return f"{self.prefix}_webhook_attempts"

    @property
    def media_store(self) -> str:
        """Object store of inbound media, object name = media id."""
        return f"{self.prefix}_media"


def parse_subject(subject: str) -> tuple[str, str, str]:
    """Split `<prefix>.<kind>.<instance>.<rest…>` into (kind, instance, rest)."""
    parts = subject.split(".", 3)
    if len(parts) != 4:
        raise ValueError(f"not a wabus subject: {subject!r}")
    return parts[1], parts[2], parts[3]
