"""Identifier rules and generators shared by every event and command.

One rule for every identifier that becomes part of a NATS name: an identifier is one or more
*tokens* of ASCII letters, digits and a few marks, joined by single dots, starting with a letter or
digit. Such a string is always a valid NATS KV key (only `[-/_=.a-zA-Z0-9]`, no leading, trailing
or doubled dot), and with a single token also a valid subject token (no `.`, `*`, `>` or
whitespace). Ids that appear as subject tokens (instance id, endpoint id) are single tokens; ids
that are only KV keys or key suffixes (command id after `<instance>.`, API key id) may have several.
A value that breaks the rule is refused where it enters (the relay, the connector, the settings),
never later where NATS would reject it.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Annotated

from pydantic import StringConstraints

INSTANCE_ID_MAX = 63
ENDPOINT_ID_MAX = 63
COMMAND_ID_MAX = 128
API_KEY_ID_MAX = 64

INSTANCE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A subject token (`wa.cmd.<instance>.send`) and a KV key (config, status, leases buckets)."""
ENDPOINT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A subject token (`wa.dlq.<instance>.<endpoint>.<type>`) and part of a webhook lease key."""
COMMAND_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_=-]*(?:\.[A-Za-z0-9_=-]+)*$"
"""At most 128 characters. The suffix of a send record key (`<instance>.<command id>`) and the
`Nats-Msg-Id` of its command; never a subject token, so dots between tokens are allowed."""
IDEMPOTENCY_KEY_PATTERN = COMMAND_ID_PATTERN
"""An `Idempotency-Key` becomes the command id as it is."""
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""A WhatsApp message id (`3EB0…`, `BAE5…`): letters, digits, `_` and `-`; the suffix of the
key under which the connector remembers a message (`<instance>.<message id>`)."""
API_KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$"
"""At most 64 characters; safe as a KV key, like a command id."""

COMMAND_ID_RULE = (
    "1-128 characters: letters, digits and _=- in parts joined by single dots "
    "(no leading, trailing or double dot), starting with a letter or digit"
)
API_KEY_ID_RULE = (
    "1-64 characters: letters, digits and _- in parts joined by single dots "
    "(no leading, trailing or double dot), starting with a letter or digit"
)

InstanceId = Annotated[str, StringConstraints(pattern=INSTANCE_ID_PATTERN)]
EndpointId = Annotated[str, StringConstraints(pattern=ENDPOINT_ID_PATTERN)]
CommandId = Annotated[str, StringConstraints(pattern=COMMAND_ID_PATTERN, max_length=COMMAND_ID_MAX)]
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]
ApiKeyId = Annotated[str, StringConstraints(pattern=API_KEY_ID_PATTERN, max_length=API_KEY_ID_MAX)]

_instance_re = re.compile(INSTANCE_ID_PATTERN)
_endpoint_re = re.compile(ENDPOINT_ID_PATTERN)
_command_re = re.compile(COMMAND_ID_PATTERN)
_api_key_re = re.compile(API_KEY_ID_PATTERN)
_KV_KEY_CHARS = re.compile(r"[-/_=.a-zA-Z0-9]+")
_SUBJECT_TOKEN_BREAKERS = re.compile(r"[.*>\s]")


def _matches(rule: re.Pattern[str], value: object, longest: int) -> bool:
    # the length first: the pattern never runs on an oversized value
    return isinstance(value, str) and 0 < len(value) <= longest and bool(rule.fullmatch(value))


def is_instance_id(value: object) -> bool:
    """True when `value` is a valid instance id (and so a safe NATS subject token)."""
    return _matches(_instance_re, value, INSTANCE_ID_MAX)


def is_endpoint_id(value: object) -> bool:
    """True when `value` is a valid webhook endpoint id (a safe NATS subject token)."""
    return _matches(_endpoint_re, value, ENDPOINT_ID_MAX)


def is_command_id(value: object) -> bool:
    """True when `value` can serve as a command id: its `Nats-Msg-Id` and, after `<instance>.`,
    its send record key."""
    return _matches(_command_re, value, COMMAND_ID_MAX)


def is_api_key_id(value: object) -> bool:
    """True when `value` is a valid API key id."""
    return _matches(_api_key_re, value, API_KEY_ID_MAX)


def is_kv_key(value: str) -> bool:
    """NATS's rule for a KV key: `[-/_=.a-zA-Z0-9]` only, no leading or trailing dot, no empty
    token. (nats-py checks all but the empty token; the server refuses that one later.)"""
    return (
        bool(_KV_KEY_CHARS.fullmatch(value))
        and not value.startswith(".")
        and not value.endswith(".")
        and ".." not in value
    )


def is_subject_token(value: str) -> bool:
    """NATS's rule for one subject token: not empty, no `.`, no wildcard, no whitespace."""
    return bool(value) and not _SUBJECT_TOKEN_BREAKERS.search(value)


def command_id_problem(value: object) -> str | None:
    """Why `value` cannot be a command id, in words for an error detail; None when it can."""
    if is_command_id(value):
        return None
    if not isinstance(value, str):
        return f"a string is expected, not {type(value).__name__}"
    if not value:
        return "it is empty"
    if len(value) > COMMAND_ID_MAX:
        return f"it has {len(value)} characters, over {COMMAND_ID_MAX}"
    if value.startswith(".") or value.endswith(".") or ".." in value:
        return "a leading, trailing or double dot (an empty NATS key token)"
    bad = next((c for c in value if not re.fullmatch(r"[A-Za-z0-9_=.-]", c)), None)
    if bad is not None:
        return f"the character {bad!r} is not allowed ({COMMAND_ID_RULE})"
    return f"it must start with a letter or digit ({COMMAND_ID_RULE})"


class _RandomBytes:
    """`os.urandom` drawn a block at a time: one system call per 4 KiB of ids instead of one per
    id. On the relay's send path (a request id and a command id per send) those calls were a
    tenth of the app's CPU on a busy machine. Still the kernel's CSPRNG: a command id must not
    be guessable (another key could claim it as its Idempotency-Key first). A forked child
    starts a fresh block, so parent and child never hand out the same bytes."""

    BLOCK = 4096

    def __init__(self) -> None:
        self._block = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._block, self._at = b"", 0

    def hex(self, size: int) -> str:
        if self._at + size > len(self._block):
            self._block, self._at = os.urandom(self.BLOCK), 0
        start, self._at = self._at, self._at + size
        return self._block[start : self._at].hex()


_random = _RandomBytes()


def random_hex(size: int) -> str:
    """`size` random bytes as hex, like `secrets.token_hex` (same source, fewer system calls)."""
    return _random.hex(size)


def new_event_id() -> str:
    """A random event id, for events that have no source id of their own."""
    return "evt_" + random_hex(12)


def new_command_id() -> str:
    """A random command id, used when the caller sent no `Idempotency-Key`."""
    return "cmd_" + random_hex(12)


def derived_event_id(instance: str, event_type: str, source_id: str) -> str:
    """A deterministic event id, so a replayed WhatsApp event maps to the same envelope id.

    JetStream drops the second publish of the same id inside its duplicate window, and webhook
    receivers deduplicate on `webhook-id`, so determinism here is what makes replays harmless.
    """
    digest = hashlib.sha256(f"{instance}\x1f{event_type}\x1f{source_id}".encode()).hexdigest()
    return "evt_" + digest[:24]
