"""JetStream stream definitions, as plain data the NATS adapter turns into stream configs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.subjects import Topology

DAY = 86_400.0


class Retention(StrEnum):
    LIMITS = "limits"
    WORK_QUEUE = "workqueue"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: Retention
    max_age_seconds: float
    duplicate_window_seconds: float
    description: str


def stream_specs(topology: Topology, events_max_age_seconds: float = 7 * DAY) -> list[StreamSpec]:
    """`WA_EVENTS` keeps history for replay; `WA_COMMANDS` is a work queue; `WA_DLQ` keeps failures.

    The commands duplicate window is an hour so that a client retrying with the same
    `Idempotency-Key` within that hour never creates a second command.
    """
    return [
        StreamSpec(
            name=topology.events_stream,
            subjects=(topology.all_events,),
            retention=Retention.LIMITS,
            max_age_seconds=events_max_age_seconds,
            duplicate_window_seconds=120.0,
            description="Every WhatsApp event, as envelopes",
        ),
        StreamSpec(
            name=topology.commands_stream,
            subjects=(topology.all_commands,),
            retention=Retention.WORK_QUEUE,
            max_age_seconds=DAY,
            duplicate_window_seconds=3600.0,
            description="Commands for the connector; removed once executed",
        ),
        StreamSpec(
            name=topology.dlq_stream,
            subjects=(topology.dead_letters,),
            retention=Retention.LIMITS,
            max_age_seconds=30 * DAY,
            duplicate_window_seconds=120.0,
            description="Webhook deliveries that exhausted their retries",
        ),
    ]
