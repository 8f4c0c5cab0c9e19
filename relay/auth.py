"""Request signing of the HTTP command API — one pure function to sign, one to verify.

`X-Wabus-Signature: v1=<hex HMAC-SHA256(secret, canonical_request(...))>`, where the canonical
request is `"<ts>\\n<METHOD>\\n<path?query>\\n<hex sha256(body)>"`. It binds method, path,
query and body, so a captured request cannot be pointed elsewhere. Several `v1=` values separated
by commas are accepted, and comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from wabus.settings import ApiKey

TOLERANCE_SECONDS = 300
KEY_ID_HEADER = "x-wabus-key-id"
TIMESTAMP_HEADER = "x-wabus-timestamp"
SIGNATURE_HEADER = "x-wabus-signature"


class AuthError(Exception):
    """Why a request was not authenticated; `code` is stable, the text is for humans."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def canonical_request(timestamp: str, method: str, target: str, body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return f"{timestamp}\n{method.upper()}\n{target}\n{body_hash}".encode()


def sign_request(secret: bytes, timestamp: int | str, method: str, target: str, body: bytes) -> str:
    """The `X-Wabus-Signature` value for a request; `target` is the path plus `?query` if any."""
    digest = hmac.new(secret, canonical_request(str(timestamp), method, target, body), "sha256")
    return "v1=" + digest.hexdigest()


@dataclass(frozen=True)
class Verified:
    key: ApiKey
    signature: str
    """The matching signature, which the replay guard records."""


def verify_request(
    keys: Mapping[str, ApiKey],
    headers: Mapping[str, str],
    method: str,
    target: str,
    body: bytes,
    now: float,
) -> Verified:
    key_id = headers.get(KEY_ID_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    signatures = headers.get(SIGNATURE_HEADER)
    if not (key_id and timestamp and signatures):
        raise AuthError(
            "missing_signature",
            "X-Wabus-Key-Id, X-Wabus-Timestamp and X-Wabus-Signature are required",
        )
    key = keys.get(key_id)
    if key is None:
        raise AuthError("unknown_key", "unknown X-Wabus-Key-Id")
    # ASCII only: `str.isdigit` also accepts superscripts and other scripts' digits ("¹²"),
    # some of which `int()` refuses
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise AuthError(
            "invalid_timestamp", "X-Wabus-Timestamp must be unix seconds: 1-12 ASCII digits"
        )
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        raise AuthError(
            "timestamp_out_of_tolerance",
            f"X-Wabus-Timestamp is more than {TOLERANCE_SECONDS}s from the server clock",
        )
    expected = sign_request(key.secret, timestamp, method, target, body)
    for candidate in signatures.split(","):
        candidate = candidate.strip()
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return Verified(key=key, signature=expected)
    raise AuthError("invalid_signature", "X-Wabus-Signature does not match the request")
