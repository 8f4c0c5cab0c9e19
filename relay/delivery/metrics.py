"""Prometheus metrics of webhook delivery."""

from prometheus_client import Counter, Gauge, Histogram

from relay.delivery.records import Outcome

ATTEMPTS = Counter(
    "wabus_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"]
)
ATTEMPTS_BY_OUTCOME = {outcome: ATTEMPTS.labels(outcome.value) for outcome in Outcome}
"""Label children looked up once: the lookup costs more than the increment on the hot path."""
LATENCY = Histogram(
    "wabus_webhook_latency_seconds",
    "Time from sending a webhook to its answer",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
DISABLED = Counter(
    "wabus_webhook_endpoints_disabled_total", "Endpoints disabled after answering 410 Gone"
)
DEAD_LETTERS = Counter("wabus_webhook_dead_letters_total", "Events sent to the dead-letter stream")
ENDPOINTS_HELD = Gauge(
    "wabus_webhook_endpoints_delivering", "Endpoints this relay process holds the lease of"
)
POISON = Counter(
    "wabus_webhook_poison_total",
    "Messages on the events stream that were not events, dead-lettered at first sight",
)
REPLIES_REFUSED = Counter(
    "wabus_webhook_replies_refused_total",
    "Webhook answers asking for a reply that could not be sent (invalid, or over 64 KiB)",
)
DELIVERIES_LOST = Counter(
    "wabus_webhook_deliveries_lost_total",
    "Deliveries from JetStream that never reached this relay (a NATS node lost with them in "
    "flight); each holds its endpoint back one acknowledgement window",
)
