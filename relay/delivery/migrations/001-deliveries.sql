-- One row per HTTP request made to a webhook endpoint (`relay.delivery.records.Attempt`).
-- Append-only: rows are written in batches by COPY and never updated.
CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL,
    event_seq bigint NOT NULL,
    instance text NOT NULL,
    event_type text NOT NULL,
    endpoint text NOT NULL,
    attempt int NOT NULL,
    outcome text NOT NULL,
    status_code int,
    latency_ms real NOT NULL,
    error text,
    next_attempt_at timestamptz,
    at timestamptz NOT NULL,
    trigger text NOT NULL
);

-- Listings are newest first by id (the pagination cursor), so each filter's index ends in id.
CREATE INDEX webhook_deliveries_endpoint_id ON webhook_deliveries (endpoint, id);
CREATE INDEX webhook_deliveries_instance_id ON webhook_deliveries (instance, id);
CREATE INDEX webhook_deliveries_outcome_id ON webhook_deliveries (outcome, id);
-- One event's attempts at one endpoint: latest, delivered, and the event_id filter.
CREATE INDEX webhook_deliveries_event_endpoint_id ON webhook_deliveries (event_id, endpoint, id);
-- An endpoint's attempts over a time range: since/until listings.
CREATE INDEX webhook_deliveries_endpoint_at ON webhook_deliveries (endpoint, at);
