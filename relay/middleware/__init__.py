"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request on the hot path)."""
