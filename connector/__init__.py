"""The connector: keeps WhatsApp sessions alive and bridges them to NATS JetStream."""
