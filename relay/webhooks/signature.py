"""Standard Webhooks v1 signing: `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`.

Pure and clock-free (the timestamp is passed in) so it is tested against golden vectors and against
the official `standardwebhooks` verifier.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class WebhookSecret:
    """A decoded `whsec_…` secret; its repr never shows the key."""

    __slots__ = ("key",)

    def __init__(self, secret: str) -> None:
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError("webhook secrets start with `whsec_`")
        self.key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
        if len(self.key) < 16:
            raise ValueError("webhook secret is shorter than 128 bits")

    def __repr__(self) -> str:
        return "WebhookSecret(***)"


def sign(secret: WebhookSecret, message_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.digest(secret.key, f"{message_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + base64.b64encode(mac).decode()


def webhook_headers(
    secrets: Sequence[WebhookSecret], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers; several secrets (rotation) give several signatures."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
    }


def new_secret() -> str:
    import secrets as _secrets

    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode()
