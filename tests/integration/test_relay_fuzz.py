"""Property tests of the relay's input handling, against a real relay on a real nats-server: no
answer is a 5xx, every refusal is a problem with a stable `code`, and a refused request never
reaches `WA_COMMANDS`.

- Bodies, paths and queries of every route in the relay's own `/openapi.json` (our strategies;
  `test_relay_schemathesis.py` adds schemathesis' own), signed correctly so they get past
  authentication and exercise validation, some with their signature corrupted.
- The authentication and idempotency headers as arbitrary bytes, written on the wire as they are.

Seeded (`derandomize=True`, no example database): a failure replays on every machine; each test
has a bounded budget. hypothesis drives synchronous functions, so the relay runs on a loop in a
background thread (`tests.threaded_relay`).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from relay.auth import sign_request
from relay.client import signed_headers
from relay.openapi import openapi_document
from relay.routes import ENDPOINTS
from schemas.ids import INSTANCE_ID_PATTERN
from tests.conftest import API_KEY_ID, API_SECRET
from tests.raw_http import RawResponse, raw_request
from tests.schema_strategies import ANY_JSON, from_schema, mutated
from tests.threaded_relay import Relay, fuzz_settings, threaded_relay
from wabus.settings import Settings

DOCUMENT = openapi_document(ENDPOINTS, "test")
COMPONENTS = DOCUMENT["components"]["schemas"]
OPERATIONS = [
    (method.upper(), path, operation)
    for path, methods in DOCUMENT["paths"].items()
    for method, operation in methods.items()
]
EXAMPLES_PER_ROUTE = 30
HEADER_EXAMPLES = 200
SEEDED = hypothesis_settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def relay(settings: Settings) -> Iterator[Relay]:
    with threaded_relay(fuzz_settings(settings)) as served:
        yield served


def _param_value(parameter: dict[str, Any]) -> Any:
    if parameter["name"] == "instance":
        return st.one_of(st.just("acme"), st.from_regex(INSTANCE_ID_PATTERN, fullmatch=True),
                         st.text(max_size=12))  # fmt: skip
    conforming = from_schema(parameter["schema"], COMPONENTS).map(str)
    return st.one_of(conforming, st.text(max_size=12))


@st.composite
def requests(draw: st.DrawFn, method: str, path: str, operation: dict[str, Any]) -> dict[str, Any]:
    target = path
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if parameter["in"] == "path":
            value = draw(_param_value(parameter))
            target = target.replace("{" + name + "}", quote(str(value), safe="") or "x")
        elif parameter["in"] == "query" and draw(st.booleans()):
            query[name] = draw(_param_value(parameter))
        elif parameter["in"] == "header" and draw(st.booleans()):
            headers[name] = draw(st.from_regex(r"\A[!-~]{1,40}\Z"))
    if query:
        target += "?" + urlencode(query)
    body = b""
    if "requestBody" in operation or draw(st.integers(0, 9)) == 0:
        content = operation.get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema", {})
        conforming = from_schema(schema, COMPONENTS)
        value = draw(st.one_of(conforming, conforming.flatmap(mutated), ANY_JSON))
        body = json.dumps(value).encode()
        if draw(st.integers(0, 9)) == 0:
            body = draw(st.binary(max_size=64))
    content_type = draw(
        st.sampled_from(
            ["application/json"] * 8 + ["text/plain", "application/x-www-form-urlencoded"]
        )
    )
    corrupt = draw(st.sampled_from(["none"] * 6 + ["signature", "body", "key", "stale"]))
    return {"method": method, "target": target, "body": body, "headers": headers,
            "content_type": content_type, "corrupt": corrupt}  # fmt: skip


def send(relay: Relay, request: dict[str, Any]) -> tuple[httpx.Response, int, int]:
    method, target, body = request["method"], request["target"], request["body"]
    now = time.time() - (1000 if request["corrupt"] == "stale" else 0)
    headers = signed_headers(API_KEY_ID, API_SECRET, method, target, body, now)
    if request["corrupt"] == "signature":
        headers["X-Wabus-Signature"] = "v1=" + "0" * 64
    elif request["corrupt"] == "key":
        headers["X-Wabus-Key-Id"] = "intruder"
    sent_body = body + b" " if request["corrupt"] == "body" else body
    headers |= request["headers"] | {"Content-Type": request["content_type"]}

    async def go() -> tuple[httpx.Response, int, int]:
        before = await relay.count_commands()
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.request(
                method, relay.url + target, content=sent_body, headers=headers
            )
        return response, before, await relay.count_commands()

    return relay.run(go())


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_fuzzed_requests_never_fail_the_relay_nor_publish_when_refused(
    relay: Relay, method: str, path: str, operation: dict[str, Any]
) -> None:
    statuses: list[int] = []

    @hypothesis_settings(SEEDED, max_examples=EXAMPLES_PER_ROUTE)
    @given(request=requests(method, path, operation))
    def check(request: dict[str, Any]) -> None:
        response, before, after = send(relay, request)
        statuses.append(response.status_code)
        assert response.status_code < 500, (request, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"]
            assert after == before, ("a refused request published a command", request)
        if request["corrupt"] != "none":
            assert response.status_code in {401, 404, 405}, (request, response.text)

    check()
    print(f"{method} {path}: {len(statuses)} requests, {Counter(statuses)}")
    assert any(400 <= status < 500 for status in statuses)
    assert not any(status >= 500 for status in statuses)


# header fuzzing: the four headers a client controls before any validation, as raw bytes

SEND_TARGET = "/v1/instances/acme/messages"
SEND_BODY = json.dumps({"to": "5511999999999", "text": "hi"}).encode()
HOSTILE_VALUES = [
    "¹²".encode("latin-1"),  # isdigit() is True for these; int() refuses them
    "³²¹".encode("latin-1") * 4,  # only ¹²³ are in Latin-1
    "¹²³⁴⁵⁶⁷⁸⁹⁰".encode(),
    "١٧٠٠٠٠٠٠٠٠".encode(),  # Arabic-Indic digits, as UTF-8
    "１７００００００００".encode(),  # fullwidth digits
    b"",
    b" ",
    b"\x00",
    b"\x7f\xff\xfe",
    b"-1",
    b"+1700000000",
    b"1e9",
    b"0x10",
    b"9" * 13,
    b"9" * 5000,
    b"v1=" + b"0" * 64,
    b"v1=" + "é".encode() * 40,
    b"," * 300,
    b"a.",
    b"a..b",
    b"A" * 129,
    b"x" * 6000,
]
"""Values that broke, or could break, a parser: fed to every header besides random bytes."""


def _header_value(valid: bytes) -> st.SearchStrategy[bytes | None]:
    arbitrary = st.binary(max_size=80) | st.binary(min_size=1000, max_size=8000)
    kinds: dict[str, st.SearchStrategy[bytes | None]] = {
        "valid": st.just(valid),
        "absent": st.none(),
        "hostile": st.sampled_from(HOSTILE_VALUES),
        # a header value ends at CR or LF: anything else goes on the wire as it is
        "bytes": arbitrary.map(lambda value: value.replace(b"\r", b"").replace(b"\n", b"")),
        "text": st.text(max_size=40).map(str.encode),
    }
    # mostly valid: a request gets as far as the one header that is not
    return st.sampled_from(["valid"] * 6 + sorted(kinds)).flatmap(kinds.__getitem__)


@st.composite
def header_sets(draw: st.DrawFn) -> dict[str, bytes | None]:
    target = f"{SEND_TARGET}?nonce={secrets.token_hex(8)}"
    timestamp = str(int(time.time())).encode()
    return {
        "target": target.encode(),
        "now": timestamp,
        "X-Wabus-Key-Id": draw(_header_value(API_KEY_ID.encode())),
        "X-Wabus-Timestamp": draw(_header_value(timestamp)),
        # `b"sign"`: the right signature over whatever the other headers turned out to be
        "X-Wabus-Signature": draw(_header_value(b"sign")),
        "Idempotency-Key": draw(
            st.none() | _header_value(b"order-" + secrets.token_hex(4).encode())
        ),
    }


def _wire_headers(drawn: dict[str, bytes | None]) -> tuple[str, list[tuple[bytes, bytes]], bool]:
    """The target and headers to send, and whether the signature is the right one."""
    target = (drawn["target"] or b"").decode()
    headers: list[tuple[bytes, bytes]] = [(b"Content-Type", b"application/json")]
    signed = False
    for name in ("X-Wabus-Key-Id", "X-Wabus-Timestamp", "Idempotency-Key"):
        value = drawn[name]
        if value is not None:
            headers.append((name.encode(), value))
    signature = drawn["X-Wabus-Signature"]
    if signature == b"sign":
        timestamp = (drawn["X-Wabus-Timestamp"] or b"").decode("latin-1")
        signature = sign_request(API_SECRET.encode(), timestamp, "POST", target, SEND_BODY).encode()
        signed = drawn["X-Wabus-Key-Id"] == API_KEY_ID.encode()
    if signature is not None:
        headers.append((b"X-Wabus-Signature", signature))
    return target, headers, signed


def test_fuzzed_auth_and_idempotency_headers_never_fail_the_relay(relay: Relay) -> None:
    statuses: list[int] = []

    @hypothesis_settings(SEEDED, max_examples=HEADER_EXAMPLES)
    @given(drawn=header_sets())
    def check(drawn: dict[str, bytes | None]) -> None:
        target, headers, signed = _wire_headers(drawn)
        before = relay.commands()
        response: RawResponse = relay.run(
            raw_request(relay.url, "POST", target, headers, SEND_BODY)
        )
        statuses.append(response.status)
        assert response.status != 0, ("no answer", drawn)
        assert response.status < 500, (drawn, response)
        if response.status >= 400:
            assert relay.commands() == before, ("a refused request published a command", drawn)
            if response.from_relay:
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["code"]
        fresh = drawn["X-Wabus-Timestamp"] == drawn["now"]
        if signed and fresh and drawn["Idempotency-Key"] is None:
            # positive control: every part right, so the send must be queued
            assert response.status == 202, (drawn, response)

    check()
    print(f"headers: {len(statuses)} requests, {Counter(statuses)}")
    assert 202 in statuses  # the valid requests among them went through
    assert 401 in statuses  # and the hostile ones were refused by authentication
    assert not any(status >= 500 for status in statuses)
