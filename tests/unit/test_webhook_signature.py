from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from relay.webhooks.signature import WebhookSecret, new_secret, sign, webhook_headers

# The test vector of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_specification_vector() -> None:
    assert sign(WebhookSecret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_official_library_verifies_our_signature() -> None:
    secret = new_secret()
    body = b'{"id":"evt_1","type":"message.received"}'
    headers = webhook_headers([WebhookSecret(secret)], "evt_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "message.received"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"1", b"2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_rotation_sends_one_signature_per_secret() -> None:
    old, new = new_secret(), new_secret()
    body = b"{}"
    headers = webhook_headers(
        [WebhookSecret(old), WebhookSecret(new)], "evt_2", int(time.time()), body
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)


def test_secret_is_validated_and_hidden() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        WebhookSecret("plain")
    with pytest.raises(ValueError, match="128 bits"):
        WebhookSecret("whsec_AAAA")
    assert "whsec" not in repr(WebhookSecret(new_secret()))
