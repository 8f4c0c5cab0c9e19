"""Shared plumbing of the wabus services: settings, logging, the NATS adapter, leases, the SSRF
guard, serving apps, the embedded nats-server. It imports only `schemas`; the command line sits
above it, in `wabus_cli`."""
