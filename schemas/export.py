"""JSON Schema files generated from the models: `python -m schemas.export` rewrites them.

The committed files are what the TypeScript side generates its types from; a test fails when they
drift from the models, so regenerate and commit them with every model change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, create_model

from schemas.commands import COMMAND_MODELS
from schemas.envelope import Envelope, EventData, RawEnvelope
from schemas.events import EVENT_MODELS
from schemas.instances import InstanceConfig, InstanceStatus, SendRecord
from schemas.queries import QUERIES, QueryAnswer

SCHEMA_DIR = Path(__file__).parent / "json"


def event_envelope_model(data_model: type[EventData]) -> type[BaseModel]:
    """The envelope of one event type: `type` fixed to that event, `data` its model."""
    name = "".join(part.title() for part in data_model.event_type.replace(".", "_").split("_"))
    model: type[BaseModel] = create_model(
        f"{name}Event",
        __base__=Envelope[data_model],  # type: ignore[valid-type]
        type=(Literal[data_model.event_type], data_model.event_type),  # type: ignore[arg-type]
    )
    return model


def _schema(model: Any, title: str) -> dict[str, Any]:
    schema = TypeAdapter(model).json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema


def generated_schemas() -> dict[str, dict[str, Any]]:
    """Relative file name → JSON Schema, for every contract model."""
    envelopes = [event_envelope_model(m) for m in EVENT_MODELS.values()]
    union = Annotated[Union[tuple(envelopes)], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
    files = {
        "envelope.json": _schema(RawEnvelope, "Envelope"),
        "event.json": _schema(union, "WabusEvent"),
        "instance-config.json": _schema(InstanceConfig, "InstanceConfig"),
        "instance-status.json": _schema(InstanceStatus, "InstanceStatus"),
        "send-record.json": _schema(SendRecord, "SendRecord"),
    }
    for command, model in COMMAND_MODELS.items():
        files[f"commands/{command}.json"] = _schema(model, f"{command.title()}Command")
    files["query-answer.json"] = _schema(QueryAnswer, "QueryAnswer")
    for query, (request, answer) in QUERIES.items():
        title = "".join(part.title() for part in query.split("_"))
        files[f"queries/{query}.request.json"] = _schema(request, f"{title}Request")
        files[f"queries/{query}.answer.json"] = _schema(answer, f"{title}Answer")
    for event_type, envelope in zip(EVENT_MODELS, envelopes, strict=True):
        files[f"events/{event_type}.json"] = _schema(envelope, envelope.__name__)
    return files


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(target: Path = SCHEMA_DIR) -> list[Path]:
    written = []
    for relative, schema in generated_schemas().items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all():
        print(path)
