"""Events for people at a terminal: `wabus tail` and the progress `wabus dev` shows.

The formatting is pure (envelope in, text out); following NATS is a thin core subscription, so
it sees events live without creating any JetStream consumer (and works for a read-only user).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import segno
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from schemas.commands import PAIR_PHONE_COMMAND, PairPhone
from schemas.envelope import Envelope, encode, utc_now
from schemas.ids import new_command_id
from schemas.subjects import Topology

Echo = Callable[[str], None]


def events_subject(topology: Topology, instance: str | None, event_type: str | None) -> str:
    """The subject matching one instance (or all) and one event type or pattern (or all).

    `event_type` is a type (`message.received`) or a pattern of NATS wildcards (`message.*`,
    `connection.>`).
    """
    instance_token = instance or "*"
    return f"{topology.prefix}.evt.{instance_token}.{event_type or '>'}"


def _clock(timestamp: object) -> str:
    try:
        return datetime.fromisoformat(str(timestamp)).strftime("%H:%M:%S")
    except ValueError:
        return "--:--:--"


def _fields(event_type: str, data: dict[str, Any]) -> str:
    def pick(*names: str) -> str:
        shown = [f"{name}={data[name]!r}" for name in names if data.get(name) not in (None, "")]
        return "  ".join(shown)

    match event_type:
        case "message.received":
            text = data.get("text")
            body = repr(text) if text else f"[{data.get('type')}]"
            sender = data.get("push_name") or data.get("from")
            mine = "  (from me)" if data.get("from_me") else ""
            return f"{sender} → {data.get('chat')}: {body}{mine}"
        case "poll.vote":
            chosen = data.get("selected")
            shown = ", ".join(chosen) if chosen else "(vote taken back)"
            if not data.get("decrypted"):
                shown = "(not decrypted: the poll is unknown)"
            return f"{data.get('from')} in poll {data.get('poll_id')}: {shown}"
        case "message.sent":
            return pick("to", "message_id", "command_id")
        case "message.failed":
            return pick("to", "code", "reason", "command_id")
        case "message.receipt":
            return pick("status", "chat", "message_ids")
        case "connection.qr":
            return f"QR #{data.get('refresh', 0)} (expires {_clock(data.get('expires_at'))})"
        case "connection.pair_code":
            return f"pairing code {data.get('code')} for +{data.get('phone')}"
        case "connection.open":
            return pick("jid", "push_name")
        case "connection.close":
            again = "reconnecting" if data.get("will_reconnect") else "not reconnecting"
            return f"{data.get('reason')}, {again}"
        case _:
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"))[:200]


def format_event(envelope: dict[str, Any]) -> str:
    """One readable line: time, instance, type, the fields that matter for that type."""
    event_type = str(envelope.get("type"))
    data = envelope.get("data") or {}
    return (
        f"{_clock(envelope.get('timestamp'))}  {envelope.get('instance')}  "
        f"{event_type:<22} {_fields(event_type, data)}"
    )


def render_qr(payload: str) -> str:
    """The QR as text for a terminal (two modules per character), scannable by WhatsApp."""
    out = io.StringIO()
    segno.make(payload, error="l").terminal(out=out, compact=True, border=2)
    return out.getvalue()


def connection_progress(envelope: dict[str, Any], instance_hint: str) -> str | None:
    """What `wabus dev` prints for a connection event (None for other events)."""
    event_type = str(envelope.get("type"))
    data = envelope.get("data") or {}
    instance = envelope.get("instance", instance_hint)
    match event_type:
        case "connection.connecting":
            return f"… {instance}: connecting to WhatsApp (attempt {data.get('attempt', 0)})"
        case "connection.qr":
            return (
                f"{render_qr(str(data.get('qr')))}\n"
                f"{instance}: scan this with WhatsApp on your phone → Settings → Linked devices"
                f" → Link a device (new code #{data.get('refresh', 0)},"
                f" valid until {_clock(data.get('expires_at'))}).\n"
                "  Or pair with a code instead: type your phone number (digits with country"
                " code) and press Enter, or start with `wabus dev --phone <digits>`."
            )
        case "connection.pair_code":
            return (
                f"{instance}: on the phone with +{data.get('phone')}: WhatsApp → Linked devices"
                f" → Link with phone number → enter  {data.get('code')}"
            )
        case "connection.open":
            return (
                f"✔ {instance}: connected as {data.get('push_name') or ''} {data.get('jid')}\n"
                f"  send your first message:  wabus send {instance} <phone digits> "
                '"hello from wabus"'
            )
        case "connection.close":
            again = "reconnecting" if data.get("will_reconnect") else "not reconnecting"
            return f"… {instance}: connection closed ({data.get('reason')}), {again}"
        case "connection.logged_out":
            return (
                f"✘ {instance}: logged out ({data.get('reason')}); a new QR follows to pair again"
            )
        case "connection.failed":
            return f"✘ {instance}: gave up: {data.get('code')} {data.get('reason')}"
    return None


async def follow(
    nc: NATS, subject: str, echo: Echo, render: Callable[[dict[str, Any]], str | None]
) -> Any:
    """Subscribe and echo each event as `render` shows it; returns the subscription."""

    async def on_event(message: Msg) -> None:
        try:
            envelope = json.loads(message.data)
        except ValueError:
            echo(f"(not JSON on {message.subject}: {message.data[:80]!r})")
            return
        line = render(envelope)
        if line is not None:
            echo(line)

    subscription = await nc.subscribe(subject, cb=on_event)
    await nc.flush()
    return subscription


async def request_pair_code(nc: NATS, topology: Topology, instance: str, phone: str) -> str:
    """Publish a `pair_phone` command; the code arrives as a `connection.pair_code` event."""
    command_id = new_command_id()
    envelope = Envelope[dict[str, Any]](
        id=command_id,
        type=PAIR_PHONE_COMMAND,
        instance=instance,
        timestamp=utc_now(),
        data=PairPhone(phone=phone).model_dump(mode="json"),
    )
    await nc.jetstream().publish(
        topology.command(instance, PAIR_PHONE_COMMAND),
        encode(envelope),
        headers={"Nats-Msg-Id": command_id},
    )
    return command_id


async def wait_until(
    check: Callable[[], Any], what: str, echo: Echo, every: float = 0.2, report: float = 3.0
) -> None:
    """Poll `check` until it is true; say what is being waited for every `report` seconds, so
    a slow start is never silent."""
    loop = asyncio.get_running_loop()
    started = next_report = loop.time()
    while not await check():
        now = loop.time()
        if now - next_report >= report:
            echo(f"… still waiting for {what} ({now - started:.0f}s)")
            next_report = now
        await asyncio.sleep(every)


def explain(error: BaseException) -> str:
    """The messages of an error and of every error grouped in it, for one line to a person."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(explain(inner) for inner in error.exceptions))
    return str(error) or type(error).__name__
