"""The parsers that take request input are total: for any input they return or raise the one
error their caller turns into a 4xx — never anything else, which would be a 500. Seeded property
tests, each beside examples that must pass (so a parser refusing everything would fail here)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from relay.auth import AuthError, sign_request, verify_request
from relay.delivery.policy import retry_after_seconds
from relay.models import DeliveryFilter, DeliveryRecover
from relay.problems import MAX_FIELD_ERRORS, invalid_body, is_json_media_type
from relay.webhooks.replies import reply_to_event
from schemas.commands import check_base64_media, normalise_phone, normalise_recipient
from schemas.instances import check_http_url
from wabus.settings import ApiKey

SEEDED = settings(
    max_examples=2000, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
URL_PARTS = st.sampled_from(
    ["http://", "https://", "[", "]", ":", "::1", "@", "/", "%", "%zz", "xn--", "a", "é", ".",
     "99999", "0", "65535", "abc", "?", "#", "\\", "ß", "\u0660", "[v1.x]", "..", "\u200b", " "]
)  # fmt: skip


@SEEDED
@given(st.lists(URL_PARTS, max_size=10).map("".join) | st.text(max_size=40).map("http://".__add__))
def test_url_checking_refuses_with_value_error_only(value: str) -> None:
    with contextlib.suppress(ValueError):
        check_http_url(value)


@pytest.mark.parametrize(
    "value",
    ["https://hooks.example.com/wa", "http://127.0.0.1:8080/x?y=1", "http://[::1]:1/",
     "https://bücher.example/wa", "http://user:pw@hooks.example.com:65535/"],
)  # fmt: skip
def test_urls_that_parse_are_kept_as_given(value: str) -> None:
    assert check_http_url(value) == value


@pytest.mark.parametrize(
    "value",
    ["http://h:abc/", "http://h:99999/", "http://[::1/", "http://[v1.x]@", "http://h:0/",
     "ftp://h/", "http:///x", "http://a b/", "http://h/\x00"],
)  # fmt: skip
def test_urls_that_do_not_parse_are_value_errors(value: str) -> None:
    with pytest.raises(ValueError, match=r"URL|port|host"):
        check_http_url(value)


@SEEDED
@given(st.text(max_size=40))
def test_recipients_and_phones_refuse_with_value_error_and_keep_ascii_digits_only(
    value: str,
) -> None:
    for parse in (normalise_recipient, normalise_phone):
        try:
            parsed = parse(value)
        except ValueError:
            continue
        if "@" not in parsed:
            assert parsed.isascii(), (value, parsed)
            assert parsed.isdigit(), (value, parsed)


def test_phone_numbers_are_ascii_digits() -> None:
    assert normalise_recipient("+55 (11) 99999-9999") == "5511999999999"
    assert normalise_phone("55.11.99999.9999") == "5511999999999"
    assert normalise_recipient("120363000000000000@g.us") == "120363000000000000@g.us"
    for other in ("٥٥١١٩٩٩٩٩٩٩٩٩", "５５１１９９９９９９９９９", "⁵⁵¹¹⁹⁹⁹⁹⁹⁹⁹⁹⁹", "5" * 300):
        with pytest.raises(ValueError, match=r"ASCII digits|characters"):
            normalise_recipient(other)
        with pytest.raises(ValueError, match="ASCII digits"):
            normalise_phone(other)


def test_base64_media_is_strict_and_bounded() -> None:
    assert check_base64_media("QUJD") == "QUJD"
    for bad in ("QUJ", "QUJD\n", " QUJD", "QQ==QQ==", "data:a/b;base64,QUJD", "é", ""):
        with pytest.raises(ValueError, match=r"base64|bytes"):
            check_base64_media(bad)


def test_json_media_types() -> None:
    for good in ("application/json", "Application/JSON", "application/json; charset=utf-8",
                 'application/json;charset="UTF-8"', "application/json; v=1"):  # fmt: skip
        assert is_json_media_type(good), good
    for bad in (None, "", "text/plain", "application/jsonp", "application/problem+json",
                "application/json; charset=latin-1", "json"):  # fmt: skip
        assert not is_json_media_type(bad), bad


KEYS = {"test": ApiKey("test", "s" * 32)}
HEADER_TEXT = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=30) | st.sampled_from(
    ["¹²", "³" * 12, "0" * 13, "", " 1", "1700000000"]
)


@SEEDED
@given(key_id=HEADER_TEXT | st.just("test"), timestamp=HEADER_TEXT, signature=HEADER_TEXT)
def test_verifying_any_header_values_raises_auth_error_only(
    key_id: str, timestamp: str, signature: str
) -> None:
    # header values as the relay reads them: bytes decoded as Latin-1, so U+0000-U+00FF
    headers = {"x-wabus-key-id": key_id, "x-wabus-timestamp": timestamp}
    headers["x-wabus-signature"] = signature
    with contextlib.suppress(AuthError):
        verify_request(KEYS, headers, "POST", "/v1/x", b"{}", 1_700_000_000.0)


def test_a_superscript_timestamp_is_invalid_and_a_right_one_verifies() -> None:
    body, target = b"{}", "/v1/x"
    for stamp in ("¹²", "1¹", "١٧٠٠٠٠٠٠٠٠"):
        headers = {
            "x-wabus-key-id": "test",
            "x-wabus-timestamp": stamp,
            "x-wabus-signature": sign_request(b"s" * 32, stamp, "POST", target, body),
        }
        with pytest.raises(AuthError) as refused:
            verify_request(KEYS, headers, "POST", target, body, 1_700_000_000.0)
        assert refused.value.code == "invalid_timestamp"
    headers["x-wabus-timestamp"] = "1700000000"
    headers["x-wabus-signature"] = sign_request(b"s" * 32, "1700000000", "POST", target, body)
    assert verify_request(KEYS, headers, "POST", target, body, 1_700_000_000.0).key.key_id == "test"


def test_retry_after_of_superscript_digits_is_unreadable_not_an_error() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("¹²", now) is None
    assert retry_after_seconds("12", now) == 12.0


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (DeliveryFilter, {"before": str(2**63)}, "before"),
        (DeliveryFilter, {"since": "2026-01-01T00:00:00"}, "since"),
        (DeliveryFilter, {"event_id": "evt\x00"}, "event_id"),
        (DeliveryRecover, {"endpoint": "global", "since": "0001-01-01T00:00:00+01:00"}, "since"),
    ],
)
def test_delivery_inputs_out_of_range_are_validation_errors(
    model: type[BaseModel], data: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(data)
    assert [error["loc"] for error in refused.value.errors()] == [(field,)]
    # positive control: in range, the same fields validate, and times come back in UTC
    fine = model.model_validate(
        {"endpoint": "global", "since": "2026-01-01T02:00:00+02:00"}
        if model is DeliveryRecover
        else {"before": str(2**63 - 1), "since": "2026-01-01T00:00:00Z", "event_id": "evt_1"}
    )
    since = getattr(fine, "since", None)
    assert since == datetime(2026, 1, 1, tzinfo=UTC)
    assert since is not None
    assert since.tzinfo is UTC


def test_a_problem_names_the_field_and_rule_and_bounds_the_list() -> None:
    class Two(BaseModel):
        a: int
        b: list[int]

    with pytest.raises(ValidationError) as refused:
        Two.model_validate({"b": ["x"] * 40})
    problem = invalid_body(refused.value)
    assert problem.status == 422
    assert problem.code == "invalid_body"
    assert problem.errors is not None
    assert len(problem.errors) == MAX_FIELD_ERRORS
    assert problem.errors[0] == {"field": "a", "message": "Field required", "type": "missing"}
    assert problem.detail.startswith("invalid field(s): a: Field required; b.0: ")
    assert problem.detail.endswith("(and 38 more in `errors`)")


def test_a_webhook_answer_nested_too_deep_asks_for_no_reply() -> None:
    data = {"chat": "5511999999999@s.whatsapp.net", "from_me": False}
    assert reply_to_event("message.received", data, b"[" * 60_000) is None
    # positive control: a shallow answer with a reply is one
    reply = reply_to_event("message.received", data, b'{"reply": {"text": "hi"}}')
    assert reply is not None
