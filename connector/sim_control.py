"""Routes `<prefix>.sim.<instance>.<action>` messages to the sim engine (sim only).

Core NATS request/reply: a control sent as a request is answered with `{"ok": …}`, so a caller
knows the engine took it. The instance must exist (its session opened from the config bucket).
"""

from __future__ import annotations

import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from connector.engines.sim import SimControlError, SimEngine
from schemas.ids import is_instance_id
from schemas.subjects import Topology, parse_subject
from wabus.logs import get_logger

log = get_logger(__name__)


async def subscribe_sim_controls(nc: NATS, topology: Topology, engine: SimEngine) -> Subscription:
    async def on_control(message: Msg) -> None:
        answer: dict[str, object]
        try:
            _, instance, action = parse_subject(message.subject)
            if not is_instance_id(instance):
                raise SimControlError(f"invalid instance id {instance!r}")
            answer = await engine.control(instance, action, message.data)
        except (SimControlError, ValueError) as error:
            log.warning("sim control refused", subject=message.subject, error=str(error))
            answer = {"ok": False, "error": str(error)}
        if message.reply:
            await message.respond(json.dumps(answer).encode())

    return await nc.subscribe(topology.all_sim_controls, cb=on_control)
