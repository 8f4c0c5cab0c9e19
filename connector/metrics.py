"""Prometheus metrics of the connector (served on `/metrics`)."""

from prometheus_client import Counter, Gauge, Histogram

SESSIONS = Gauge("wabus_connector_sessions", "Sessions by lifecycle state", ["state"])
EVENTS_PUBLISHED = Counter(
    "wabus_connector_events_published_total", "Events published to JetStream", ["type"]
)
SPOOL_DEPTH = Gauge(
    "wabus_connector_spool_depth", "Events waiting in the local spool for NATS to come back"
)
SPOOLED = Counter("wabus_connector_spooled_total", "Events that went through the local spool")
RECONNECTS = Counter(
    "wabus_connector_reconnects_total", "Session reconnects scheduled, by reason", ["reason"]
)
COMMANDS = Counter(
    "wabus_connector_commands_total",
    "Commands executed, by command and outcome",
    ["command", "outcome"],
)
SEND_SECONDS = Histogram(
    "wabus_connector_send_seconds", "Time the engine took to send a message (pacing excluded)"
)
ERRORS = Counter("wabus_connector_errors_total", "Errors by stable code", ["code"])
