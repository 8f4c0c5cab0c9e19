"""Webhook delivery: Standard Webhooks signing and the worker that posts events."""
