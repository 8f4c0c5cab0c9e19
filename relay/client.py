"""A small Python client for the relay's signed API (used by the `wabus` CLI and the tests)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx

from relay.auth import sign_request


class RelayError(Exception):
    """The relay answered with a problem; `code` is its stable error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


def signed_headers(
    key_id: str, secret: str, method: str, target: str, body: bytes, now: float
) -> dict[str, str]:
    """The `X-Wabus-*` headers for one request."""
    timestamp = int(now)
    return {
        "X-Wabus-Key-Id": key_id,
        "X-Wabus-Timestamp": str(timestamp),
        "X-Wabus-Signature": sign_request(secret.encode(), timestamp, method, target, body),
    }


class RelayClient:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        secret: str,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        self._key_id = key_id
        self._secret = secret
        self._clock = clock

    async def request(
        self,
        method: str,
        target: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send a signed request; `target` is the path with its query string."""
        body = b"" if payload is None else json.dumps(payload).encode()
        headers = signed_headers(self._key_id, self._secret, method, target, body, self._clock())
        if body:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return await self._http.request(method, target, content=body, headers=headers)

    async def send_text(
        self, instance: str, to: str, text: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        response = await self.request(
            "POST",
            f"/v1/instances/{instance}/messages",
            {"to": to, "text": text},
            idempotency_key=idempotency_key,
        )
        return _json_or_raise(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _json_or_raise(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json() if response.content else {}
    if response.is_error:
        raise RelayError(response.status_code, body.get("code", "error"), body.get("detail", ""))
    return body
