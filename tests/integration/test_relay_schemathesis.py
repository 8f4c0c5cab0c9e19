"""schemathesis against the relay's own `/openapi.json`: every operation, valid and invalid data
(schemathesis' positive and negative generation), each request signed for itself, sent over real
HTTP to a real relay on a real nats-server with its delivery log on a real Postgres.

The check: no answer is a 5xx, every 4xx is `application/problem+json` with a `code`, and a refused
request leaves `WA_COMMANDS` as it was. Seeded (`derandomize=True`, no example database: a
failure replays as it is, on any machine) and bounded (`EXAMPLES` per operation and mode), so it
runs in CI in well under a minute. The answers must include successes: proof that the signing
really happened and the fuzzing reached the routes, not just the signature check.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from requests.auth import AuthBase
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from relay.client import signed_headers
from tests.conftest import API_KEY_ID, API_SECRET
from tests.threaded_relay import Relay, fuzz_settings, threaded_relay
from wabus.settings import Settings

EXAMPLES = 25
"""Per operation and generation mode: 26 operations x 2 modes x 25 stays well under a minute."""
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
AnyCase = schemathesis.Case[Any]
_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEEDED = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


class WabusAuth(AuthBase):
    """Signs each request as it is about to be sent (method, path?query, body), with a fresh
    `nonce` last in the query so that two identical generated requests are not a replay of each
    other (the relay reads the last one). A generated nonce that breaks the rule is left alone,
    for the relay to refuse."""

    def __init__(self) -> None:
        self.signed = 0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = request.url or ""
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        if all(_NONCE.fullmatch(value) for name, value in query if name == "nonce"):
            request.prepare_url(url, {"nonce": secrets.token_hex(8)})
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes), type(body)
        method, target = request.method or "GET", request.path_url
        request.headers.update(
            signed_headers(API_KEY_ID, API_SECRET, method, target, raw, time.time())
        )
        self.signed += 1
        return request


GATEWAY_CODES = frozenset({"connector_unavailable", "connector_timeout"})
"""A query route's honest answer when no connector runs the instance (none does here): `504`
with one of these codes, never a 500."""


def refusal_problem(response: schemathesis.Response) -> str | None:
    """What is wrong with an answer by the project's rules, or None when it is fine."""
    status, text = response.status_code, response.content[:500]
    if status == 504 and _code(response) in GATEWAY_CODES:
        return None
    if status >= 500:
        return f"server error {status}: {text!r}"
    if status >= 400:
        content_type = [v.lower() for v in response.headers.get("content-type", [])]
        if content_type != ["application/problem+json"]:
            return f"{status} is not a problem: {content_type} {text!r}"
        if not json.loads(response.content).get("code"):
            return f"{status} problem without a code: {text!r}"
    return None


def _code(response: schemathesis.Response) -> str | None:
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def _answer(status: int, content_type: str, body: bytes) -> schemathesis.Response:
    headers = {"content-type": [content_type]}
    return schemathesis.Response(status, headers, body, requests.PreparedRequest(), 0.0, True)


@pytest.fixture
def relay(settings: Settings, database_url: str) -> Iterator[Relay]:
    settings = fuzz_settings(settings).model_copy(
        update={
            "database_url": SecretStr(database_url),
            # a global endpoint, so the deliveries routes have one to name; nothing is
            # delivered to it (no events are published in this test)
            "webhook_url": "http://127.0.0.1:9/hook",
        }
    )
    with threaded_relay(settings) as served:
        yield served


def fuzz_operation(
    relay: Relay,
    operation: Operation,
    mode: GenerationMode,
    send: Callable[[AnyCase], schemathesis.Response],
) -> Counter[int]:
    """Run one operation's seeded examples of `mode`; the statuses it answered."""
    statuses: Counter[int] = Counter()

    @SEEDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: AnyCase) -> None:
        before = relay.commands()
        response = send(case)
        statuses[response.status_code] += 1
        problem = refusal_problem(response)
        assert problem is None, (problem, case.as_curl_command())
        if response.status_code >= 400:
            published = relay.commands() - before
            assert not published, ("a refused request published", case.as_curl_command())

    check()
    return statuses


def test_schemathesis_finds_no_server_error_and_only_problems_as_refusals(relay: Relay) -> None:
    schema = schemathesis.openapi.from_url(relay.url + "/openapi.json")
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    assert len(operations) >= 20, "the relay's document lists every route"
    auth = WabusAuth()
    statuses: Counter[int] = Counter()
    by_operation: dict[str, Counter[int]] = {}
    with requests.Session() as session:

        def send(case: AnyCase) -> schemathesis.Response:
            return case.call(base_url=relay.url, session=session, auth=auth, timeout=30)

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                answered = fuzz_operation(relay, operation, mode, send)
                by_operation.setdefault(operation.label, Counter()).update(answered)
                statuses.update(answered)
    total = sum(statuses.values())
    print(f"schemathesis: {total} requests, {dict(sorted(statuses.items()))}")
    assert auth.signed == total  # every request went through the signing hook
    # Signed for real: most answers come from past the signature check, and the routes that
    # need no particular state answered with success.
    assert statuses[401] < total / 4, statuses
    assert sum(n for status, n in statuses.items() if 200 <= status < 300) > 0
    assert by_operation["GET /v1/instances"][200] > 0, by_operation["GET /v1/instances"]
    assert by_operation["GET /v1/endpoints"][200] > 0, by_operation["GET /v1/endpoints"]
    assert not any(status >= 500 and status != 504 for status in statuses)
    # and the check itself tells a server error, or a refusal that is no problem, when it sees one
    assert refusal_problem(_answer(500, "application/problem+json", b'{"code": "x"}'))
    assert refusal_problem(_answer(504, "application/problem+json", b'{"code": "x"}'))
    gateway = b'{"code": "connector_unavailable"}'
    assert refusal_problem(_answer(504, "application/problem+json", gateway)) is None
    assert refusal_problem(_answer(400, "text/plain", b"Invalid HTTP request received."))
    assert refusal_problem(_answer(422, "application/problem+json", b'{"detail": "x"}'))
    assert refusal_problem(_answer(422, "application/problem+json", b'{"code": "x"}')) is None
