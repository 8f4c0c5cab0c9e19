from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from wabus.settings import Settings


def test_environment_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WABUS_API_KEYS", "a:0123456789abcdef, b:fedcba9876543210x")
    monkeypatch.setenv("WABUS_WEBHOOK_RETRY_SCHEDULE", "0,5,300")
    monkeypatch.setenv("WABUS_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8,::1/128")
    monkeypatch.setenv("WABUS_ENGINE", "sim")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings()
    assert set(settings.keys) == {"a", "b"}
    assert settings.webhook_retry_schedule == (0.0, 5.0, 300.0)
    assert settings.webhook_allow_cidrs[0] == ipaddress.ip_network("127.0.0.0/8")
    assert settings.log_level == "DEBUG"
    assert "0123456789abcdef" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WABUS_API_KEYS", "missing-colon"),
        ("WABUS_API_KEYS", "a:short"),
        ("WABUS_WEBHOOK_SECRET", "not-a-whsec"),
        ("WABUS_WEBHOOK_RETRY_SCHEDULE", "0,-1"),
        ("WABUS_ENGINE", "baileys"),
        ("WABUS_SUBJECT_PREFIX", "Has.Dots"),
    ],
)
def test_bad_values_name_the_problem(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises((ValidationError, ValueError)):
        Settings().keys  # noqa: B018
