"""The wabus public contract: envelope, events, commands, subjects and stream definitions.

Nothing in this package does I/O; the connector, the relay and any NATS client build on it.
"""
