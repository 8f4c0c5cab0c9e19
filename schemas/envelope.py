"""The one JSON shape carried on NATS and in webhook bodies."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, SerializeAsAny

from schemas.ids import InstanceId


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z`, the form every envelope uses."""
    if moment.tzinfo is UTC:  # the common case, without a conversion (on every command sent)
        return moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> datetime:
    return datetime.now(UTC)


_this_second: tuple[int, str] = (-1, "")


def timestamp_now() -> str:
    """`format_timestamp(utc_now())` with the date and time of day formatted once a second, not
    on every call: every signed send stamps its command (~1.5 µs less per send)."""
    global _this_second
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    if seconds != _this_second[0]:
        _this_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_this_second[1]}.{micros // 1000:03d}Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]


class ContractModel(BaseModel):
    """Base of every contract model: immutable, and unknown fields are an error, not a surprise."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class EventData(ContractModel):
    """Base of the `data` of an event; each subclass names its event type once."""

    event_type: ClassVar[str]


DataT = TypeVar("DataT")


class Envelope(ContractModel, Generic[DataT]):
    """`{"id", "type", "instance", "timestamp", "data"}` — events and commands alike."""

    id: str = Field(min_length=1, max_length=128)
    type: str = Field(min_length=1, max_length=64)
    instance: InstanceId
    timestamp: Timestamp
    data: DataT


RawEnvelope = Envelope[dict[str, Any]]
"""An envelope whose data is not yet validated against its type (what a consumer first parses)."""

EventEnvelope = Envelope[SerializeAsAny[EventData]]
"""An event envelope; its data serialises as its concrete event model."""


def make_event(
    instance: str,
    data: EventData,
    *,
    source_id: str | None = None,
    now: datetime | None = None,
) -> EventEnvelope:
    """Wrap event data in an envelope; a `source_id` (WhatsApp or command id) fixes the id."""
    from schemas.ids import derived_event_id, new_event_id

    event_id = (
        derived_event_id(instance, data.event_type, source_id) if source_id else new_event_id()
    )
    return EventEnvelope(
        id=event_id,
        type=data.event_type,
        instance=instance,
        timestamp=now or utc_now(),
        data=data,
    )


def encode(envelope: Envelope[Any]) -> bytes:
    """The wire form of an envelope; the one place that decides how it is serialised."""
    return envelope.model_dump_json().encode()


def encode_parts(
    envelope_id: str,
    envelope_type: str,
    instance: str,
    timestamp: str,
    data: dict[str, Any] | BaseModel,
) -> bytes:
    """`encode` of an envelope built from parts already validated (the relay's commands), byte
    for byte, in a third of the time: no model is constructed on the send path. A test holds
    the two equal. `timestamp` is formatted already (`format_timestamp`, `timestamp_now`).
    `data` may be a model: it is serialised as its JSON dump, without the
    intermediate dict."""
    return pydantic_core.to_json(
        {
            "id": envelope_id,
            "type": envelope_type,
            "instance": instance,
            "timestamp": timestamp,
            "data": data,
        }
    )
