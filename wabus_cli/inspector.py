"""The dev webhook inspector: a local receiver that verifies each webhook with the official
`standardwebhooks` library and prints it — what `wabus dev` delivers to when no
`WABUS_WEBHOOK_URL` is configured, so a first run shows signed webhooks end to end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def describe(event: dict[str, Any]) -> str:
    """One line for a verified webhook: its type, instance and what matters for that type."""
    data = event.get("data", {})
    summary = f"{event.get('type')}  instance={event.get('instance')}"
    if event.get("type") == "message.received":
        summary += f"  from={data.get('from')}  text={data.get('text')!r}"
    elif event.get("type") in {"message.sent", "message.failed"}:
        summary += f"  command={data.get('command_id')}  to={data.get('to')}"
        summary += f"  {data.get('message_id') or data.get('code')}"
    return summary


def create_inspector_app(secret: str, echo: Callable[[str], None] = print) -> Starlette:
    """A receiver at `/webhook` that answers 200 to what `secret` verifies and 400 to the rest,
    and prints a line for each, so a mis-signed webhook is as visible as a good one."""
    verifier = Webhook(secret)

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            event = verifier.verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError) as error:  # forged, stale, or malformed
            echo(f"✘ webhook REJECTED ({error}) id={request.headers.get('webhook-id')}")
            return Response(status_code=400)
        echo(f"✔ webhook verified  {describe(event)}  id={request.headers['webhook-id']}")
        return Response(json.dumps({"ok": True}), media_type="application/json")

    return Starlette(routes=[Route("/webhook", receive, methods=["POST"])])
