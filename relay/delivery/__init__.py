"""Webhook delivery: endpoints, the delivery policy, per-chat ordering, the dispatcher that runs
them against JetStream, and the delivery log."""
