from __future__ import annotations

import hashlib

import pytest

from relay.auth import (
    AuthError,
    canonical_request,
    canonical_request_v2,
    sign_request,
    sign_request_v2,
    signed_command_id,
    verify_request,
)
from schemas.ids import is_command_id
from wabus.settings import ApiKey

SECRET = "0123456789abcdef0123"
KEYS = {"k1": ApiKey("k1", SECRET), "k2": ApiKey("k2", "another-secret-of-length")}
NOW = 1_764_072_000
BODY = b'{"to":"5511999999999","text":"hi"}'
TARGET = "/v1/instances/acme/messages"


def headers(signature: str, key_id: str = "k1", timestamp: int = NOW) -> dict[str, str]:
    return {
        "x-wabus-key-id": key_id,
        "x-wabus-timestamp": str(timestamp),
        "x-wabus-signature": signature,
    }


def test_golden_vector() -> None:
    """Fixed inputs give a fixed signature: the recipe other languages must reproduce."""
    body_hash = hashlib.sha256(BODY).hexdigest()
    assert canonical_request(str(NOW), "post", TARGET, BODY) == (
        f"{NOW}\nPOST\n{TARGET}\n{body_hash}".encode()
    )
    assert sign_request(SECRET.encode(), NOW, "POST", TARGET, BODY) == (
        "v1=377c8173fe6c54832aabb3864e3bc7b74feb59df6390540b9cb200c8783e1553"
    )


def test_golden_vector_v2() -> None:
    """The v2 recipe: a `v2` first line, and the Idempotency-Key (empty without one) signed."""
    body_hash = hashlib.sha256(BODY).hexdigest()
    assert canonical_request_v2(str(NOW), "post", TARGET, b"order-42", BODY) == (
        f"v2\n{NOW}\nPOST\n{TARGET}\norder-42\n{body_hash}".encode()
    )
    assert sign_request_v2(SECRET.encode(), NOW, "POST", TARGET, None, BODY) == (
        "v2=161777e39250e5b408f026d61d74adf259bc48f9b21979a648ac73ac9f31eb5e"
    )
    assert sign_request_v2(SECRET.encode(), NOW, "POST", TARGET, "order-42", BODY) == (
        "v2=e0b6abe780bfc0d6f313bc0842d859a57187f8378b1cd9966a883bc5ff8d6eab"
    )


@pytest.mark.parametrize(
    ("signed_key", "sent_key"),
    [(None, "order-42"), ("order-42", None), ("order-42", "order-43")],
    ids=["added", "removed", "changed"],
)
def test_a_v2_signature_covers_the_idempotency_key(
    signed_key: str | None, sent_key: str | None
) -> None:
    signature = sign_request_v2(SECRET.encode(), NOW, "POST", TARGET, signed_key, BODY)

    def sent(key: str | None) -> dict[str, str]:
        return headers(signature) | ({"idempotency-key": key} if key else {})

    verified = verify_request(KEYS, sent(signed_key), "POST", TARGET, BODY, NOW)
    assert (verified.signature, verified.covers_idempotency_key) == (signature, True)
    with pytest.raises(AuthError) as raised:
        verify_request(KEYS, sent(sent_key), "POST", TARGET, BODY, NOW)
    assert raised.value.code == "invalid_signature"


def test_v1_and_v2_never_stand_for_each_other() -> None:
    one = sign_request(SECRET.encode(), NOW, "POST", TARGET, BODY)
    two = sign_request_v2(SECRET.encode(), NOW, "POST", TARGET, None, BODY)
    assert not verify_request(KEYS, headers(one), "POST", TARGET, BODY, NOW).covers_idempotency_key
    for forged in ("v2=" + one[3:], "v1=" + two[3:], f"{one}, {two}", f"{two}, v1=00"):
        with pytest.raises(AuthError) as raised:
            verify_request(KEYS, headers(forged), "POST", TARGET, BODY, NOW)
        assert raised.value.code == "invalid_signature", forged


def test_the_signed_command_id_is_fixed_by_signature_and_secret() -> None:
    two = sign_request_v2(SECRET.encode(), NOW, "POST", TARGET, None, BODY)
    other = sign_request_v2(SECRET.encode(), NOW + 1, "POST", TARGET, None, BODY)
    first = signed_command_id(KEYS["k1"], two)
    assert first == signed_command_id(KEYS["k1"], two)
    assert is_command_id(first)
    assert first != signed_command_id(KEYS["k1"], other)
    assert first != signed_command_id(KEYS["k2"], two)


def test_a_good_signature_is_accepted() -> None:
    signature = sign_request(SECRET.encode(), NOW, "POST", TARGET, BODY)
    verified = verify_request(KEYS, headers(signature), "POST", TARGET, BODY, NOW + 299)
    assert verified.key.key_id == "k1"
    assert verified.signature == signature


def test_one_of_several_signatures_may_match() -> None:
    good = sign_request(SECRET.encode(), NOW, "POST", TARGET, BODY)
    verify_request(KEYS, headers(f"v1=deadbeef, {good}"), "POST", TARGET, BODY, NOW)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"method": "PUT"}, "invalid_signature"),
        ({"target": "/v1/instances/other/messages"}, "invalid_signature"),
        ({"target": TARGET + "?wait=1"}, "invalid_signature"),
        ({"body": BODY.replace(b"hi", b"ho")}, "invalid_signature"),
        ({"now": NOW + 301}, "timestamp_out_of_tolerance"),
        ({"now": NOW - 301}, "timestamp_out_of_tolerance"),
    ],
)
def test_tampering_is_refused(change: dict[str, object], code: str) -> None:
    signature = sign_request(SECRET.encode(), NOW, "POST", TARGET, BODY)
    request: dict[str, object] = {"method": "POST", "target": TARGET, "body": BODY, "now": NOW}
    request.update(change)
    with pytest.raises(AuthError) as raised:
        verify_request(KEYS, headers(signature), **request)  # type: ignore[arg-type]
    assert raised.value.code == code


def test_wrong_secret_unknown_key_and_missing_headers() -> None:
    forged = sign_request(b"not-the-secret-at-all", NOW, "POST", TARGET, BODY)
    cases = [
        (headers(forged), "invalid_signature"),
        (headers(forged, key_id="nope"), "unknown_key"),
        ({"x-wabus-key-id": "k1"}, "missing_signature"),
        (headers(forged) | {"x-wabus-timestamp": "12e3"}, "invalid_timestamp"),
    ]
    for given, code in cases:
        with pytest.raises(AuthError) as raised:
            verify_request(KEYS, given, "POST", TARGET, BODY, NOW)
        assert raised.value.code == code


def test_a_key_cannot_sign_for_another_key_id() -> None:
    signature = sign_request(SECRET.encode(), NOW, "POST", TARGET, BODY)
    with pytest.raises(AuthError):
        verify_request(KEYS, headers(signature, key_id="k2"), "POST", TARGET, BODY, NOW)


def test_secrets_do_not_show_in_reprs() -> None:
    assert SECRET not in repr(KEYS)


def test_api_key_entries_with_and_without_instance_scopes() -> None:
    from wabus.settings import parse_api_keys

    keys = parse_api_keys(
        ["admin:" + "a" * 20, "tenant@acme|beta-*:" + "b" * 20, "colon:" + "c:" * 10]
    )
    assert keys["admin"].scopes == ()
    assert keys["admin"].allows("anything")
    assert keys["tenant"].scopes == ("acme", "beta-*")
    assert keys["tenant"].secret == b"b" * 20
    assert keys["tenant"].allows("acme")
    assert keys["tenant"].allows("beta-7")
    assert not keys["tenant"].allows("acme2")
    assert not keys["tenant"].allows("other")
    assert keys["colon"].secret == b"c:" * 10  # a secret may contain colons, as before


@pytest.mark.parametrize(
    "entry",
    [
        "nosecret",
        "id:short",
        "@acme:" + "x" * 20,
        "id@:" + "x" * 20,
        "id@Bad.Scope:" + "x" * 20,
        "bad id:" + "x" * 20,
    ],
)
def test_malformed_api_key_entries_are_refused(entry: str) -> None:
    from wabus.settings import parse_api_keys

    with pytest.raises(ValueError, match="WABUS_API_KEYS"):
        parse_api_keys([entry])


def test_duplicate_key_ids_are_refused() -> None:
    from wabus.settings import parse_api_keys

    with pytest.raises(ValueError, match="twice"):
        parse_api_keys(["k:" + "x" * 20, "k:" + "y" * 20])
