"""Every input that answered 500 or was wrongly accepted (issue 10), against a real relay on a
real nats-server: each is now a 4xx `application/problem+json` with a stable `code` naming the
field and the rule, nothing reaches `WA_COMMANDS`, and beside each the same request made right
is accepted (the positive control: the refusal is for the flaw, not for the route)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from relay.app import create_app
from relay.auth import sign_request
from relay.client import signed_headers
from tests.conftest import API_KEY_ID, API_SECRET
from tests.connector_support import connector_running, state_is
from tests.raw_http import raw_request
from tests.relay_helpers import commands_stored, last_command, signed
from tests.support import eventually, running
from wabus.settings import Settings

SEND = "/v1/instances/acme/messages"
PHONE = "5511999999999"


def hostile(settings: Settings) -> Settings:
    """The test's settings with a global endpoint (the deliveries routes need one to name) and
    no limit on failed authentications (some cases fail it on purpose)."""
    return settings.model_copy(
        update={"webhook_url": "http://127.0.0.1:9/hook", "auth_failure_limit": 0}
    )


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(hostile(settings))) as base:
        yield base


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    return problem


def assert_field(problem: dict[str, Any], field: str, rule: str) -> None:
    """The 422 names the field and the rule, in `errors` and in the detail alike."""
    entries = [e for e in problem["errors"] if e["field"] == field]
    assert entries, problem
    assert rule in entries[0]["message"], problem
    assert entries[0]["type"], problem
    assert f"{field}: {entries[0]['message']}" in problem["detail"], problem


# authentication: a timestamp of digits `int()` refuses


@pytest.mark.parametrize(
    "timestamp",
    [
        "¹²".encode("latin-1"),  # isdigit() is True, int() raises: was a 500
        "³²¹".encode("latin-1") * 4,
        "١٧٠٠٠٠٠٠٠٠".encode(),  # Arabic-Indic digits, as UTF-8 bytes
        "１７００００００００".encode(),  # fullwidth
        b"\xb2" * 40,
    ],
    ids=["superscript", "superscripts-12", "arabic-indic", "fullwidth", "superscripts-40"],
)
async def test_a_timestamp_of_non_ascii_digits_is_refused_401_not_500(
    url: str, nc: NATS, settings: Settings, timestamp: bytes
) -> None:
    body = json.dumps({"to": PHONE, "text": "hi"}).encode()

    async def attempt(stamp: bytes, target: str) -> tuple[int, dict[str, Any]]:
        # signed over the timestamp as the relay reads it, so that only its form is wrong
        signature = sign_request(API_SECRET.encode(), stamp.decode("latin-1"), "POST", target, body)
        headers = [
            (b"Content-Type", b"application/json"),
            (b"X-Wabus-Key-Id", API_KEY_ID.encode()),
            (b"X-Wabus-Timestamp", stamp),
            (b"X-Wabus-Signature", signature.encode()),
        ]
        answer = await raw_request(url, "POST", target, headers, body)
        assert answer.from_relay, answer
        return answer.status, answer.json() if answer.body else {}

    status, problem = await attempt(timestamp, SEND + "?nonce=a")
    assert (status, problem["code"]) == (401, "invalid_timestamp"), problem
    assert "ASCII digits" in problem["detail"]
    assert await commands_stored(nc, settings) == 0
    # positive control: the same request with the time in ASCII digits is queued
    status, answer = await attempt(str(int(time.time())).encode(), SEND + "?nonce=b")
    assert (status, answer["status"]) == (202, "accepted"), answer
    assert await commands_stored(nc, settings) == 1


# webhook URLs the URL parser refuses (port `abc`, `99999`, a broken IPv6 literal): were 500s

BAD_URLS = [
    ("http://hooks.example.com:abc/wa", "not a valid URL"),
    ("http://hooks.example.com:99999/wa", "not a valid URL"),
    ("http://[::1/wa", "not a valid URL"),
    ("http://[v1.x]@/wa", "not a valid URL"),  # yarl raises IndexError on this one
    ("http://xn--/wa", "not a valid URL"),
    ("http://hooks.example.com:0/wa", "outside 1-65535"),
    ("http://hooks example.com/wa", "no spaces or control characters"),
    ("https://", "with a host"),
]


@pytest.mark.parametrize(("bad", "rule"), BAD_URLS, ids=[u for u, _ in BAD_URLS])
async def test_a_webhook_url_that_does_not_parse_is_a_422_naming_the_field(
    url: str, nc: NATS, settings: Settings, bad: str, rule: str
) -> None:
    created = await signed(url, "POST", "/v1/instances", {"id": "acme", "webhooks": [{"url": bad}]})
    assert_field(assert_problem(created, 422, "invalid_body"), "webhooks.0.url", rule)
    assert_problem(await signed(url, "GET", "/v1/instances/acme"), 404, "unknown_instance")

    # positive control: the same instance with a URL that parses is created
    good = {"id": "acme", "webhooks": [{"url": "https://hooks.example.com:8443/wa"}]}
    assert (await signed(url, "POST", "/v1/instances", good)).status_code == 201

    added = await signed(url, "POST", "/v1/instances/acme/webhooks", {"url": bad})
    assert_field(assert_problem(added, 422, "invalid_body"), "url", rule)
    stored = (await signed(url, "GET", "/v1/instances/acme")).json()
    assert len(stored["webhooks"]) == 1
    more = {"url": "https://audit.example.com/wa"}
    assert (await signed(url, "POST", "/v1/instances/acme/webhooks", more)).status_code == 201
    assert await commands_stored(nc, settings) == 0


# deliveries: naive or out-of-range datetimes, a cursor beyond bigint, NUL in an id


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"endpoint": "global", "since": "2026-01-01T00:00:00"}, "since", "timezone"),
        (
            {"endpoint": "global", "since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00"},
            "until",
            "timezone",
        ),
        ({"endpoint": "global", "since": "0001-01-01T00:00:00+01:00"}, "since", "out of range"),
        ({"endpoint": "global", "since": "9999-12-31T23:59:59-01:00"}, "since", "out of range"),
    ],
    ids=["naive-since", "naive-until", "before-year-1-in-utc", "after-9999-in-utc"],
)
async def test_recovering_with_a_naive_or_unrepresentable_time_is_a_422(
    url: str, nc: NATS, settings: Settings, body: dict[str, Any], field: str, rule: str
) -> None:
    refused = await signed(url, "POST", "/v1/deliveries/recover", body)
    assert_field(assert_problem(refused, 422, "invalid_body"), field, rule)
    # positive control: ranges with time zones start a recovery (of nothing, here), even at the
    # ends of what a datetime holds
    ranges = [
        ("2026-01-01T00:00:00+02:00", None),
        ("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z"),
        ("9999-12-31T23:59:58Z", "9999-12-31T23:59:59Z"),
    ]
    for since, until in ranges:
        aware = {"endpoint": "global", "since": since} | ({"until": until} if until else {})
        started = await signed(url, "POST", "/v1/deliveries/recover", aware)
        assert (started.status_code, started.json()) == (202, {"endpoint": "global", "events": 0})
    assert await commands_stored(nc, settings) == 0


@pytest.fixture
async def logged_url(settings: Settings, nc: NATS, database_url: str) -> AsyncIterator[str]:
    with_log = hostile(settings).model_copy(update={"database_url": SecretStr(database_url)})
    async with running(create_app(with_log)) as base:
        yield base


async def test_delivery_log_queries_out_of_range_are_a_422_not_a_database_error(
    logged_url: str,
) -> None:
    refused = [
        ("before=9223372036854775808", "before", "less than or equal to 9223372036854775807"),
        ("before=99999999999999999999999", "before", "less than or equal to"),
        ("event_id=evt%00x", "event_id", "pattern"),
        ("since=2026-01-01T00:00:00", "since", "timezone"),
        ("until=0001-01-01T00:00:00%2B05:00", "until", "out of range"),
    ]
    for query, field, rule in refused:
        response = await signed(logged_url, "GET", f"/v1/deliveries?{query}")
        assert_field(assert_problem(response, 422, "invalid_query"), field, rule)
    # positive control: the largest cursor and a zoned time are queries, answered from Postgres
    for query in ("before=9223372036854775807", "since=2026-01-01T00:00:00Z", "event_id=evt_1"):
        response = await signed(logged_url, "GET", f"/v1/deliveries?{query}")
        assert (response.status_code, response.json()) == (200, {"deliveries": [], "next": None})


# phone numbers: ASCII digits only, wherever a number enters

UNICODE_DIGITS = {
    "arabic-indic": "٥٥١١٩٩٩٩٩٩٩٩٩",
    "fullwidth": "５５１１９９９９９９９９９",
    "superscript": "⁵⁵¹¹⁹⁹⁹⁹⁹⁹⁹⁹⁹",
    "devanagari-in-jid": "५५११९९९९९९९९९@s.whatsapp.net",
}
PHONE_ROUTES: list[tuple[str, str, Any, str]] = [
    # (target, field, a body builder taking the number, route name)
    (SEND, "to", lambda n: {"to": n, "text": "hi"}, "send"),
    (SEND, "mentions.0", lambda n: {"to": PHONE, "text": "hi", "mentions": [n]}, "mention"),
    ("/v1/instances/acme/read", "chat", lambda n: {"chat": n, "message_ids": ["3EB0"]}, "read"),
    ("/v1/instances/acme/read", "sender",
     lambda n: {"chat": "1203630@g.us", "message_ids": ["3EB0"], "sender": n}, "read-sender"),
    ("/v1/instances/acme/presence", "chat", lambda n: {"chat": n, "state": "composing"},
     "presence"),
    ("/v1/instances/acme/pair?wait=0", "phone", lambda n: {"phone": n}, "pair"),
    ("/api/send", "to", lambda n: {"instanceId": "acme", "to": n, "message": "hi"}, "legacy"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "field", "build"),
    [route[:3] for route in PHONE_ROUTES],
    ids=[route[3] for route in PHONE_ROUTES],
)
async def test_phone_numbers_in_other_scripts_digits_are_refused_everywhere(
    url: str, nc: NATS, settings: Settings, target: str, field: str, build: Any
) -> None:
    sent = 0
    for name, number in UNICODE_DIGITS.items():
        if field == "phone" and "@" in number:
            continue  # pairing takes a number only
        response = await signed(url, "POST", target, build(number))
        problem = assert_problem(response, 422, "invalid_body")
        rule = "not a WhatsApp JID" if "@" in number else "ASCII digits"
        assert_field(problem, field, rule)
        sent += 1
        assert await commands_stored(nc, settings) == 0, name
    # positive control: the same number in ASCII digits, decorated as people type it
    response = await signed(url, "POST", target, build("+55 (11) 99999-9999"))
    assert response.status_code in {200, 202}, response.text
    assert await commands_stored(nc, settings) == 1


# inline media: strict base64, 1 byte to 16 MiB


@pytest.mark.parametrize(
    ("payload", "rule"),
    [
        ("not base64!", "expected standard base64"),
        ("QUJD\nREVG", "expected standard base64"),  # whitespace inside
        ("data:image/png;base64,QUJD", "expected standard base64"),
        ("QUJ", "expected standard base64"),  # padding missing
        ("QQ==QQ==", "expected standard base64"),  # data after the padding
        ("", "expected 1 to"),  # decodes to nothing
    ],
    ids=["junk", "newline", "data-url", "unpadded", "data-after-padding", "empty"],
)
async def test_inline_media_that_is_not_strict_base64_is_refused(
    url: str, nc: NATS, settings: Settings, payload: str, rule: str
) -> None:
    image = {"type": "image", "to": PHONE, "mimetype": "image/png"}
    response = await signed(url, "POST", SEND, image | {"base64": payload})
    assert_field(assert_problem(response, 422, "invalid_body"), "base64", rule)
    assert await commands_stored(nc, settings) == 0
    # positive control: strict base64 of a few bytes is queued as it was sent
    good = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    assert (await signed(url, "POST", SEND, image | {"base64": good})).status_code == 202
    command = await last_command(nc, settings, "acme", "send")
    assert command["data"]["base64"] == good


# media types: a body that is not declared JSON is refused for what it is


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=iso-8859-1",
        "application/jsonp",
        "application/problem+json",
    ],
    ids=lambda value: str(value),
)
async def test_a_body_that_is_not_application_json_gets_415(
    url: str, nc: NATS, settings: Settings, content_type: str | None
) -> None:
    body = json.dumps({"to": PHONE, "text": "hi"}).encode()
    for target in (SEND, "/v1/instances", "/v1/instances/acme/read", "/api/send"):
        if content_type is None:
            response = await _without_content_type(url, target, body)
        else:
            headers = {"Content-Type": content_type}
            response = await signed(url, "POST", target, body=body, headers=headers)
        problem = assert_problem(response, 415, "unsupported_media_type")
        assert "application/json" in problem["detail"]
    assert await commands_stored(nc, settings) == 0
    # positive controls: JSON with any spelling of its media type is read; a route without a
    # body needs no Content-Type, nor does an empty body where the body is optional
    for spelling in ("application/json", "Application/JSON; charset=UTF-8"):
        headers = {"Content-Type": spelling}
        assert (await signed(url, "POST", SEND, body=body, headers=headers)).status_code == 202
    assert (await _without_content_type(url, "/v1/instances", b"", "GET")).status_code == 200
    logout = await _without_content_type(url, "/v1/instances/acme/logout", b"")
    assert logout.status_code == 202, logout.text
    assert await commands_stored(nc, settings) == 3


async def _without_content_type(
    url: str, target: str, body: bytes, method: str = "POST"
) -> httpx.Response:
    """A signed request with no Content-Type header at all."""
    target += f"?nonce={time.time_ns()}"
    headers = signed_headers(API_KEY_ID, API_SECRET, method, target, body, time.time())
    async with httpx.AsyncClient(timeout=30) as http:
        request = http.build_request(method, url + target, content=body, headers=headers)
        request.headers.pop("Content-Type", None)
        return await http.send(request)


# what a 422 says


async def test_a_422_names_each_field_and_the_rule_it_broke(
    url: str, nc: NATS, settings: Settings
) -> None:
    response = await signed(url, "POST", SEND, {"to": UNICODE_DIGITS["arabic-indic"], "text": ""})
    problem = assert_problem(response, 422, "invalid_body")
    assert_field(problem, "to", "expected a phone number in international format")
    assert_field(problem, "text", "at least 1 character")
    assert {e["type"] for e in problem["errors"]} == {"value_error", "string_too_short"}
    assert problem["detail"].startswith("invalid field(s): ")
    # many errors: the list is bounded and the detail says how many more there are
    ids = ["x" * 129] * 50
    response = await signed(url, "POST", "/v1/instances/acme/read",
                            {"chat": PHONE, "message_ids": ids})  # fmt: skip
    problem = assert_problem(response, 422, "invalid_body")
    assert len(problem["errors"]) == 20
    assert "(and 47 more in `errors`)" in problem["detail"]
    assert await commands_stored(nc, settings) == 0
    # positive control: the same bodies made right are queued
    assert (await signed(url, "POST", SEND, {"to": PHONE, "text": "x"})).status_code == 202
    right = {"chat": PHONE, "message_ids": ["x" * 128] * 50}
    assert (await signed(url, "POST", "/v1/instances/acme/read", right)).status_code == 202


# and afterwards, sends of another instance complete


async def test_after_a_hostile_battery_another_instance_still_sends(
    settings: Settings, nc: NATS
) -> None:
    hostile_bodies: list[tuple[str, Any]] = [
        (SEND, {"to": UNICODE_DIGITS["arabic-indic"], "text": "x"}),
        (SEND, {"type": "image", "to": PHONE, "base64": "not base64!"}),
        ("/v1/instances", {"id": "evil", "webhooks": [{"url": "http://h:99999/"}]}),
        ("/v1/deliveries/recover", {"endpoint": "global", "since": "2026-01-01T00:00:00"}),
        ("/v1/instances/acme/pair", {"phone": UNICODE_DIGITS["fullwidth"]}),
    ]
    async with running(create_app(hostile(settings))) as url, connector_running(settings, nc):
        for target, body in hostile_bodies:
            response = await signed(url, "POST", target, body)
            assert 400 <= response.status_code < 500, response.text
        assert await commands_stored(nc, settings) == 0
        created = await signed(url, "POST", "/v1/instances", {"id": "other"})
        assert created.status_code == 201, created.text
        await eventually(lambda: state_is(nc, settings.topology, "other", "open"), timeout=20)
        sent = await signed(url, "POST", "/v1/instances/other/messages?wait=10",
                            {"to": PHONE, "text": "still here"})  # fmt: skip
        assert (sent.status_code, sent.json()["status"]) == (200, "sent"), sent.text
