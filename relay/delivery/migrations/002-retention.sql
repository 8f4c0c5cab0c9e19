-- Retention deletes the oldest rows in small batches (`relay.delivery.retention`): by time.
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);
