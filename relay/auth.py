"""Request signing of the HTTP command API — pure functions to sign, one to verify.

`X-Wabus-Signature: v2=<hex HMAC-SHA256(secret, canonical_request_v2(...))>`, where the
canonical request is `"v2\\n<ts>\\n<METHOD>\\n<path?query>\\n<Idempotency-Key or empty>\\n<hex
sha256(body)>"`; or `v1=` over `"<ts>\\n<METHOD>\\n<path?query>\\n<hex sha256(body)>"`. Both bind
method, path, query and body, so a captured request cannot be pointed elsewhere; `v2` also binds
the `Idempotency-Key`, which lets a send's command id carry its replay guard (one JetStream
round trip instead of two, `relay.signed`). Several values of one version separated by commas
are accepted; a header mixing `v1=` and `v2=` values is refused, so that a captured request
cannot be replayed under the other version's guard. Comparison is constant-time.
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
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
V1 = "v1="
V2 = "v2="


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
    return V1 + digest.hexdigest()


def canonical_request_v2(
    timestamp: str, method: str, target: str, idempotency_key: bytes, body: bytes
) -> bytes:
    """The `v2` string to sign: a first line `v2` (no `v1` string starts with it), then the
    `v1` lines with the `Idempotency-Key`'s bytes as sent (empty without one) before the body's
    hash."""
    body_hash = hashlib.sha256(body).hexdigest()
    head = f"v2\n{timestamp}\n{method.upper()}\n{target}\n".encode()
    return head + idempotency_key + b"\n" + body_hash.encode()


def sign_request_v2(
    secret: bytes,
    timestamp: int | str,
    method: str,
    target: str,
    idempotency_key: str | bytes | None,
    body: bytes,
) -> str:
    """The `v2` `X-Wabus-Signature` value: the `v1` one's coverage plus the `Idempotency-Key`
    (a `str` key is signed as UTF-8, `bytes` as they are)."""
    key = idempotency_key.encode() if isinstance(idempotency_key, str) else idempotency_key
    canonical = canonical_request_v2(str(timestamp), method, target, key or b"", body)
    return V2 + hmac.new(secret, canonical, "sha256").hexdigest()


@dataclass(frozen=True)
class Verified:
    key: ApiKey
    signature: str
    """The matching signature, which the replay guard records."""
    covers_idempotency_key: bool = False
    """A `v2` signature: the `Idempotency-Key` (or its absence) is signed too."""


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
    candidates = [candidate.strip() for candidate in signatures.split(",")]
    versions = {candidate[: len(V2)] for candidate in candidates}
    v2 = V2 in versions
    if v2 and V1 in versions:
        raise AuthError("invalid_signature", "X-Wabus-Signature mixes v1= and v2= values")
    if v2:
        # the key's bytes as received (header values arrive decoded as latin-1)
        sent_key = headers.get(IDEMPOTENCY_KEY_HEADER, "").encode("latin-1")
        expected = sign_request_v2(key.secret, timestamp, method, target, sent_key, body)
    else:
        expected = sign_request(key.secret, timestamp, method, target, body)
    for candidate in candidates:
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return Verified(key=key, signature=expected, covers_idempotency_key=v2)
    raise AuthError("invalid_signature", "X-Wabus-Signature does not match the request")


def signed_command_id(key: ApiKey, signature: str) -> str:
    """The command id of a `v2` send without `Idempotency-Key`: the same for a replay of it
    (the command stream's duplicate window refuses it), and unguessable without the key's
    secret even to whoever saw the signature, so no other key can claim it first as its own
    `Idempotency-Key`. Same shape as a random command id."""
    digest = hmac.new(key.secret, b"command id\n" + signature.encode(), "sha256")
    return "cmd_" + digest.hexdigest()[:24]
