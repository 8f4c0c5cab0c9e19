"""Shared plumbing of the wabus services: settings, logging, the NATS adapter and the CLI."""
