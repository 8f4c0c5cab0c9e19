"""Configuration from the environment (12-factor), read once and passed down.

pydantic-settings gives typed parsing and one clear error naming the variable at start-up, which
is what an operator needs when a deployment is misconfigured.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.ids import API_KEY_ID_RULE, is_api_key_id
from schemas.instances import check_http_url
from schemas.subjects import DEFAULT_PREFIX, Topology

DEFAULT_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class EngineName(StrEnum):
    NEONIZE = "neonize"
    SIM = "sim"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ApiKey:
    """One relay API key, optionally scoped to instances; the secret never appears in a repr.

    `scopes` is empty for a key that may act on every instance, else the instance ids (or
    `prefix*` patterns) it may act on.
    """

    __slots__ = ("key_id", "scopes", "secret")

    def __init__(self, key_id: str, secret: str, scopes: tuple[str, ...] = ()) -> None:
        self.key_id = key_id
        self.secret = secret.encode()
        self.scopes = scopes

    def allows(self, instance: str) -> bool:
        """True when this key may act on `instance`."""
        if not self.scopes:
            return True
        return any(
            instance.startswith(scope[:-1]) if scope.endswith("*") else instance == scope
            for scope in self.scopes
        )

    def __repr__(self) -> str:
        return f"ApiKey({self.key_id!r}, secret=***, scopes={self.scopes!r})"


_SCOPE = re.compile(r"^(?:[a-z0-9][a-z0-9_-]{0,62}|[a-z0-9_-]{0,62}\*)$")


def parse_api_keys(entries: list[str]) -> dict[str, ApiKey]:
    """Parse `WABUS_API_KEYS` entries: `id:secret` (every instance) or
    `id@inst1|inst2|pre*:secret` (only those instances; `*` ends a prefix pattern).

    The scope rides on the key id, not the secret, so every `id:secret` entry keeps its meaning.
    """
    keys: dict[str, ApiKey] = {}
    for entry in entries:
        head, sep, secret = entry.partition(":")
        key_id, at, scope_list = head.partition("@")
        scopes = tuple(scope_list.split("|")) if at else ()
        if not sep or len(secret) < 16:
            raise ValueError(
                "WABUS_API_KEYS entries are `id:secret` or `id@instance|prefix*:secret`, "
                "with a secret of 16+ characters"
            )
        if not is_api_key_id(key_id):
            # The id is named (it is no secret) so the operator sees which entry to fix.
            raise ValueError(f"WABUS_API_KEYS: key id {key_id!r} is not {API_KEY_ID_RULE}")
        if at and not all(_SCOPE.fullmatch(scope) for scope in scopes):
            raise ValueError(
                f"WABUS_API_KEYS: key {key_id!r} has a scope that is not an instance id "
                "or a `prefix*` pattern"
            )
        if key_id in keys:
            raise ValueError(f"WABUS_API_KEYS: key id {key_id!r} appears twice")
        keys[key_id] = ApiKey(key_id, secret, scopes)
    return keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        validate_by_name=True,
        hide_input_in_errors=True,  # a refused secret must not be echoed into a log or traceback
    )

    nats_url: str | None = Field(default=None, validation_alias="NATS_URL")
    nats_creds: Path | None = Field(default=None, validation_alias="NATS_CREDS")
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="WABUS_API_KEYS", repr=False
    )
    webhook_url: str | None = Field(default=None, validation_alias="WABUS_WEBHOOK_URL")
    webhook_secret: SecretStr | None = Field(default=None, validation_alias="WABUS_WEBHOOK_SECRET")
    webhook_previous_secret: SecretStr | None = Field(
        default=None, validation_alias="WABUS_WEBHOOK_PREVIOUS_SECRET"
    )
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_RETRY_SCHEDULE, validation_alias="WABUS_WEBHOOK_RETRY_SCHEDULE"
    )
    webhook_allow_cidrs: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = Field(default=(), validation_alias="WABUS_WEBHOOK_ALLOW_CIDRS")
    engine: EngineName = Field(default=EngineName.NEONIZE, validation_alias="WABUS_ENGINE")
    port: int = Field(default=8080, ge=0, le=65535, validation_alias="PORT")
    host: str = Field(default="0.0.0.0", validation_alias="WABUS_HOST")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_format: LogFormat = Field(default=LogFormat.JSON, validation_alias="LOG_FORMAT")
    data_dir: Path = Field(default=Path(".wabus"), validation_alias="WABUS_DATA_DIR")
    subject_prefix: str = Field(default=DEFAULT_PREFIX, validation_alias="WABUS_SUBJECT_PREFIX")
    events_max_age: float = Field(
        default=7 * 86_400.0, gt=0, validation_alias="WABUS_EVENTS_MAX_AGE"
    )
    relay_workers: int = Field(default=1, ge=1, le=64, validation_alias="WABUS_RELAY_WORKERS")
    max_body_bytes: int = Field(default=1 << 20, gt=0, validation_alias="WABUS_MAX_BODY_BYTES")

    # webhook delivery (issue 5)
    webhook_concurrency: int = Field(
        default=256, ge=1, le=4096, validation_alias="WABUS_WEBHOOK_CONCURRENCY"
    )
    webhook_timeout: float = Field(
        default=15.0, gt=0, le=60, validation_alias="WABUS_WEBHOOK_TIMEOUT"
    )
    webhook_lease_ttl: float = Field(default=10.0, ge=1, validation_alias="WABUS_WEBHOOK_LEASE_TTL")
    delivery_log_retention_days: float = Field(
        default=30.0, ge=0, validation_alias="WABUS_DELIVERY_LOG_RETENTION_DAYS"
    )

    # deployment (infra): 3 on a three-node JetStream cluster, so streams survive a node loss
    stream_replicas: int = Field(default=1, ge=1, le=5, validation_alias="WABUS_STREAM_REPLICAS")

    # relay API (issue 4): limits, CORS, waits
    max_send_body_bytes: int = Field(
        default=(8 << 20) - (64 << 10), gt=0, validation_alias="WABUS_MAX_SEND_BODY_BYTES"
    )  # under NATS's max_payload of 8 MiB (infra/, `wabus dev`) with room for the envelope
    rate_limit: float = Field(default=200.0, ge=0, validation_alias="WABUS_RATE_LIMIT")
    rate_burst: int = Field(default=400, ge=1, validation_alias="WABUS_RATE_BURST")
    # a key's body bytes per second: a request's cost grows with its body (inline media)
    rate_limit_bytes: float = Field(
        default=float(8 << 20), ge=0, validation_alias="WABUS_RATE_LIMIT_BYTES"
    )
    rate_burst_bytes: int = Field(default=32 << 20, ge=1, validation_alias="WABUS_RATE_BURST_BYTES")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="WABUS_CORS_ORIGINS"
    )
    max_wait_seconds: float = Field(default=30.0, gt=0, le=120, validation_alias="WABUS_MAX_WAIT")
    query_timeout: float = Field(
        default=10.0, gt=0, le=60, validation_alias="WABUS_QUERY_TIMEOUT"
    )  # how long a query route (contacts, groups) waits for the connector's answer; then 504

    # hostile input (issue 10): tenants' quotas, slow clients, guessers
    key_max_instances: int = Field(
        default=10, ge=0, le=10_000, validation_alias="WABUS_KEY_MAX_INSTANCES"
    )
    header_timeout: float = Field(default=10.0, ge=0, validation_alias="WABUS_HEADER_TIMEOUT")
    body_timeout: float = Field(default=60.0, ge=0, validation_alias="WABUS_BODY_TIMEOUT")
    trusted_proxies: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = Field(default=(), validation_alias="WABUS_TRUSTED_PROXIES")
    auth_failure_limit: int = Field(default=100, ge=0, validation_alias="WABUS_AUTH_FAILURE_LIMIT")
    auth_failure_window: float = Field(
        default=900.0, gt=0, validation_alias="WABUS_AUTH_FAILURE_WINDOW"
    )

    # dashboard (issue 13): off unless a password is set (or `wabus dev` hands it a login token)
    dashboard_password: SecretStr | None = Field(
        default=None, validation_alias="WABUS_DASHBOARD_PASSWORD"
    )
    dashboard_login_token: SecretStr | None = Field(
        default=None, validation_alias="WABUS_DASHBOARD_LOGIN_TOKEN"
    )  # a one-time login link's token (`/ui/login/<token>`): `wabus dev` makes one per start
    dashboard_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, validation_alias="WABUS_DASHBOARD_SESSION_HOURS"
    )

    # connector: sessions, pacing, spool (issue 3)
    max_sessions: int = Field(default=64, ge=1, le=10_000, validation_alias="WABUS_MAX_SESSIONS")
    qr_max_refreshes: int = Field(default=5, ge=0, validation_alias="WABUS_QR_MAX_REFRESHES")
    reconnect_base: float = Field(default=1.0, gt=0, validation_alias="WABUS_RECONNECT_BASE")
    reconnect_max: float = Field(default=60.0, gt=0, validation_alias="WABUS_RECONNECT_MAX")
    reconnect_max_attempts: int = Field(
        default=0, ge=0, validation_alias="WABUS_RECONNECT_MAX_ATTEMPTS"
    )
    send_interval: float | None = Field(default=None, ge=0, validation_alias="WABUS_SEND_INTERVAL")
    send_jitter: float = Field(default=0.3, ge=0, le=1, validation_alias="WABUS_SEND_JITTER")
    send_typing: float = Field(default=0.0, ge=0, le=30, validation_alias="WABUS_SEND_TYPING")
    spool_max_events: int = Field(default=100_000, ge=1, validation_alias="WABUS_SPOOL_MAX_EVENTS")
    connector_id: str | None = Field(default=None, validation_alias="WABUS_CONNECTOR_ID")
    sim_pairing: Literal["auto", "qr"] = Field(default="auto", validation_alias="WABUS_SIM_PAIRING")
    sim_qr_interval: float = Field(default=20.0, gt=0, validation_alias="WABUS_SIM_QR_INTERVAL")
    sim_data_dir: Path | None = Field(default=None, validation_alias="WABUS_SIM_DATA_DIR")
    """Where the sim network keeps what outlives a connector (sent messages, device sockets);
    default `<WABUS_DATA_DIR>/sim`. Connectors given the same one share one simulated network."""
    command_ack_wait: float = Field(default=30.0, ge=1, validation_alias="WABUS_COMMAND_ACK_WAIT")
    command_max_deliver: int = Field(
        default=20, ge=2, le=1000, validation_alias="WABUS_COMMAND_MAX_DELIVER"
    )
    message_memory_days: float = Field(
        default=14.0, gt=0, le=365, validation_alias="WABUS_MESSAGE_MEMORY_DAYS"
    )
    """How long the connector remembers each message it saw (quotes, group reactions, edits,
    forwards, poll votes need it): the TTL of the messages bucket."""
    leases: bool = Field(default=False, validation_alias="WABUS_LEASES")
    lease_ttl: float = Field(default=10.0, ge=1, validation_alias="WABUS_LEASE_TTL")
    """How long a dead connector's instances wait for another one (docs/connector.md)."""
    takeover_rate: float = Field(
        default=10.0, gt=0, le=1000, validation_alias="WABUS_TAKEOVER_RATE"
    )
    """Sessions per second a connector opens when it takes instances over from another."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        return _split(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        return _split(value)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> object:
        return _split(value)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule_sane(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("a non-empty list of non-negative seconds")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("webhook_allow_cidrs", "trusted_proxies", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        return _split(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        Topology(value)
        return value

    @field_validator("webhook_secret", "webhook_previous_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("a Standard Webhooks secret starts with `whsec_`")
        return value

    @property
    def pacing_interval(self) -> float:
        """Seconds between sends of one instance: `WABUS_SEND_INTERVAL`, else 1 s on WhatsApp and
        none on the sim engine (demos and benchmarks are not at risk of a ban)."""
        if self.send_interval is not None:
            return self.send_interval
        return 0.0 if self.engine is EngineName.SIM else 1.0

    @property
    def topology(self) -> Topology:
        return _topology(self.subject_prefix)

    @property
    def keys(self) -> dict[str, ApiKey]:
        return parse_api_keys(self.api_keys)


@functools.lru_cache(maxsize=16)
def _topology(prefix: str) -> Topology:
    """One (immutable) Topology per prefix: the send path asks for it on every request."""
    return Topology(prefix)
