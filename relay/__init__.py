"""The relay: signed HTTP commands in, Standard Webhooks out. Stateless; run as many as needed."""
