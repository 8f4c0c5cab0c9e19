"""One message as the connector saw it: what later quotes, reactions, edits, forwards and poll
votes need of it (`connector.memory` keeps these in the messages bucket)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.envelope import ContractModel
from schemas.events import MessageKind


class SeenMessage(ContractModel):
    """One message as the connector saw it; `raw` is the engine's own copy of its content
    (neonize: the serialized waE2E `Message`), which only that engine reads. Bytes are base64
    in the bucket."""

    model_config = ContractModel.model_config | {
        "ser_json_bytes": "base64",
        "val_json_bytes": "base64",
    }

    message_id: str
    chat: str
    sender: str = Field(
        description="The author's JID; empty for a message we sent (the engine knows its own)."
    )
    from_me: bool
    timestamp: datetime
    kind: MessageKind
    text: str | None = None
    view_once: bool = False
    raw: bytes | None = None
    poll_options: list[str] = Field(default_factory=list)
    poll_secret: bytes | None = None
