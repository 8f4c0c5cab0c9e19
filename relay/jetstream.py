"""One JetStream publish awaiting its ack, with nothing else on the way.

`JetStreamContext.publish` builds a `PubAck` dataclass from every answer; on the relay's hot path
(two acked publishes per signed send) that conversion is measurable, so this reads the two
fields the relay needs straight from the ack's JSON and raises the same errors otherwise.
"""

from __future__ import annotations

import json

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.errors import APIError, NoStreamResponseError

ACK_TIMEOUT_SECONDS = 5.0


async def publish_acked(
    nc: NATS, subject: str, payload: bytes, headers: dict[str, str]
) -> tuple[int, bool]:
    """Publish and wait for JetStream's ack: `(sequence, duplicate)`. Raises `APIError` (with
    `err_code`) when the stream refused the message, nats' `TimeoutError` without an answer."""
    try:
        message = await nc.request(subject, payload, timeout=ACK_TIMEOUT_SECONDS, headers=headers)
    except NoRespondersError as error:
        raise NoStreamResponseError from error
    ack = json.loads(message.data)
    if "error" in ack:
        refusal = ack["error"]
        raise APIError(
            code=refusal.get("code"),
            err_code=refusal.get("err_code"),
            description=refusal.get("description"),
        )
    return int(ack["seq"]), bool(ack.get("duplicate"))
