"""Prometheus metrics of the connector."""

from prometheus_client import Counter, Histogram

EVENTS_PUBLISHED = Counter(
    "wabus_connector_events_published_total", "Events published to JetStream", ["type"]
)
PUBLISH_RETRIES = Counter(
    "wabus_connector_publish_retries_total", "Event publishes retried after a NATS error"
)
COMMANDS = Counter(
    "wabus_connector_commands_total",
    "Commands executed, by command and outcome",
    ["command", "outcome"],
)
SEND_SECONDS = Histogram("wabus_connector_send_seconds", "Time the engine took to send a message")
