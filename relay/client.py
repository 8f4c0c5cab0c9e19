"""A small Python client for the relay's signed API (used by the `wabus` CLI and the tests).

Every request is signed with a fresh timestamp and a random `nonce` query parameter, so two
identical calls in the same second never collide as a replay. Command calls take an
`idempotency_key`: retrying with the same key (the client signs each attempt anew) can never
create a second command.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from relay.auth import sign_request, sign_request_v2

QUERY_READ_TIMEOUT = 65.0
"""How long a query call (contacts, groups) waits for the relay's answer: the relay answers 504
once `WABUS_QUERY_TIMEOUT` (60 s at most) has passed without the connector's."""


class RelayError(Exception):
    """The relay answered with a problem; `code` is its stable error code, `errors` the fields
    a 422 names (`field`, `message`, `type`: the rule)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        request_id: str | None = None,
        *,
        title: str = "",
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.title = title
        self.errors = errors or []


def signed_headers(
    key_id: str,
    secret: str,
    method: str,
    target: str,
    body: bytes,
    now: float,
    idempotency_key: str | None = None,
    *,
    version: int = 2,
) -> dict[str, str]:
    """The `X-Wabus-*` headers for one request, and its `Idempotency-Key` when given: signed
    `v2` (which covers the key) unless `version=1`, the older signature the relay still takes."""
    timestamp = int(now)
    if version == 1:
        signature = sign_request(secret.encode(), timestamp, method, target, body)
    else:
        signature = sign_request_v2(
            secret.encode(), timestamp, method, target, idempotency_key, body
        )
    headers = {
        "X-Wabus-Key-Id": key_id,
        "X-Wabus-Timestamp": str(timestamp),
        "X-Wabus-Signature": signature,
    }
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


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
        self._query_timeout = max(timeout, QUERY_READ_TIMEOUT)
        self._key_id = key_id
        self._secret = secret
        self._clock = clock

    async def request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        query: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        nonce: bool = True,
        http_timeout: float | None = None,
    ) -> httpx.Response:
        """Send a signed request; `query` is encoded into the signed target. `http_timeout`
        replaces the client's timeout for this request."""
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if nonce:
            params["nonce"] = secrets.token_urlsafe(12)
        target = path + ("?" + urlencode(params) if params else "")
        body = b"" if payload is None else json.dumps(payload).encode()
        headers = signed_headers(
            self._key_id, self._secret, method, target, body, self._clock(), idempotency_key
        )
        if body:
            headers["Content-Type"] = "application/json"
        if http_timeout is None:
            return await self._http.request(method, target, content=body, headers=headers)
        return await self._http.request(
            method, target, content=body, headers=headers, timeout=http_timeout
        )

    async def _json(self, method: str, path: str, payload: Any = None, **options: Any) -> Any:
        return _json_or_raise(await self.request(method, path, payload, **options))

    # instances
    async def create_instance(
        self,
        instance: str,
        *,
        webhooks: list[dict[str, Any]] | None = None,
        desired_state: str = "running",
    ) -> dict[str, Any]:
        """Create an instance; the answer holds each webhook's secret (shown only here)."""
        payload = {"id": instance, "desired_state": desired_state, "webhooks": webhooks or []}
        result: dict[str, Any] = await self._json("POST", "/v1/instances", payload)
        return result

    async def list_instances(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._json("GET", "/v1/instances"))["instances"]
        return result

    async def get_instance(self, instance: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/v1/instances/{instance}")
        return result

    async def update_instance(self, instance: str, *, desired_state: str) -> dict[str, Any]:
        """Start (`running`) or stop (`stopped`) an instance's session."""
        result: dict[str, Any] = await self._json(
            "PATCH", f"/v1/instances/{instance}", {"desired_state": desired_state}
        )
        return result

    async def add_webhook(self, instance: str, webhook: dict[str, Any]) -> dict[str, Any]:
        """Add `{"url", "events"?, "id"?, "secret"?}`; the answer holds its secret (only here)."""
        result: dict[str, Any] = await self._json(
            "POST", f"/v1/instances/{instance}/webhooks", webhook
        )
        return result

    async def delete_webhook(self, instance: str, webhook_id: str) -> None:
        await self._json("DELETE", f"/v1/instances/{instance}/webhooks/{webhook_id}")

    async def delete_instance(self, instance: str) -> None:
        await self._json("DELETE", f"/v1/instances/{instance}")

    async def status(self, instance: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/v1/instances/{instance}/status")
        return result

    async def qr(self, instance: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/v1/instances/{instance}/qr")
        return result

    async def qr_image(self, instance: str, kind: str = "png", scale: int = 8) -> bytes:
        """The QR rendered as `png` or `svg`."""
        response = await self.request(
            "GET", f"/v1/instances/{instance}/qr.{kind}", query={"scale": scale}
        )
        _raise_for_problem(response)
        return response.content

    async def pair(self, instance: str, phone: str, *, wait: float | None = None) -> dict[str, Any]:
        """Ask for a phone pairing code; `status` is `ready` with `pair_code` when it came in
        time (10 s by default)."""
        result: dict[str, Any] = await self._json(
            "POST", f"/v1/instances/{instance}/pair", {"phone": phone}, query={"wait": wait}
        )
        return result

    async def logout(self, instance: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("POST", f"/v1/instances/{instance}/logout")
        return result

    # messages
    async def send(
        self,
        instance: str,
        message: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """Send any kind (`{"to", "text"}`, `{"type": "image", "to", "url"}`, …); with `wait`,
        up to that many seconds for WhatsApp's answer."""
        result: dict[str, Any] = await self._json(
            "POST",
            f"/v1/instances/{instance}/messages",
            message,
            query={"wait": wait},
            idempotency_key=idempotency_key,
        )
        return result

    async def send_text(
        self, instance: str, to: str, text: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.send(instance, {"to": to, "text": text}, idempotency_key=idempotency_key)

    async def send_status(self, instance: str, command_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            "GET", f"/v1/instances/{instance}/messages/{command_id}"
        )
        return result

    async def mark_read(
        self, instance: str, chat: str, message_ids: list[str], sender: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"chat": chat, "message_ids": message_ids}
        if sender:
            payload["sender"] = sender
        result: dict[str, Any] = await self._json("POST", f"/v1/instances/{instance}/read", payload)
        return result

    async def presence(self, instance: str, chat: str, state: str) -> dict[str, Any]:
        """`state` is `composing`, `recording` or `paused`."""
        result: dict[str, Any] = await self._json(
            "POST", f"/v1/instances/{instance}/presence", {"chat": chat, "state": state}
        )
        return result

    async def media(self, instance: str, media_id: str) -> tuple[bytes, str]:
        """Inbound media bytes and mimetype."""
        response = await self.request("GET", f"/v1/instances/{instance}/media/{media_id}")
        _raise_for_problem(response)
        return response.content, response.headers.get("content-type", "")

    # contacts and groups: queries the connector running the instance answers (504 when none
    # runs it, or it did not answer within the relay's WABUS_QUERY_TIMEOUT)
    async def _query(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            method, path, payload, http_timeout=self._query_timeout
        )
        return result

    async def check_numbers(self, instance: str, phones: list[str]) -> list[dict[str, Any]]:
        """Which of `phones` have WhatsApp: `{"phone", "on_whatsapp", "jid"}` each, in order."""
        answer = await self._query(
            "POST", f"/v1/instances/{instance}/contacts/check", {"phones": phones}
        )
        numbers: list[dict[str, Any]] = answer["numbers"]
        return numbers

    async def contact(self, instance: str, jid: str) -> dict[str, Any]:
        """A contact's profile, by phone number or JID."""
        return await self._query("GET", _contact(instance, jid))

    async def resolve_lid(self, instance: str, jid: str) -> dict[str, Any]:
        """A contact's phone-number JID and LID, from either (`known`: whether both are)."""
        return await self._query("GET", _contact(instance, jid) + "/lid")

    async def block(self, instance: str, jid: str) -> dict[str, Any]:
        return await self._query("POST", _contact(instance, jid) + "/block")

    async def unblock(self, instance: str, jid: str) -> dict[str, Any]:
        return await self._query("POST", _contact(instance, jid) + "/unblock")

    async def subscribe_presence(self, instance: str, jid: str) -> dict[str, Any]:
        """Follow a contact's presence: `presence.update` events follow."""
        return await self._query("POST", _contact(instance, jid) + "/presence")

    async def groups(self, instance: str) -> list[dict[str, Any]]:
        """The groups the account is in, with their participants."""
        answer = await self._query("GET", f"/v1/instances/{instance}/groups")
        groups: list[dict[str, Any]] = answer["groups"]
        return groups

    async def create_group(
        self, instance: str, name: str, participants: list[str]
    ) -> dict[str, Any]:
        return await self._query(
            "POST",
            f"/v1/instances/{instance}/groups",
            {"name": name, "participants": participants},
        )

    async def group(self, instance: str, group: str) -> dict[str, Any]:
        """A group (`<digits>@g.us`): name, settings, participants."""
        return await self._query("GET", _group(instance, group))

    async def leave_group(self, instance: str, group: str) -> dict[str, Any]:
        return await self._query("DELETE", _group(instance, group))

    async def change_participants(
        self, instance: str, group: str, action: str, participants: list[str]
    ) -> dict[str, Any]:
        """`action` is `add`, `remove`, `promote` or `demote`; each participant's result."""
        return await self._query(
            "POST",
            _group(instance, group) + "/participants",
            {"action": action, "participants": participants},
        )

    async def group_invite(self, instance: str, group: str, *, revoke: bool = False) -> str:
        """The group's invite link; with `revoke`, a new one (the old one stops working)."""
        path = _group(instance, group) + "/invite"
        answer = await (
            self._query("POST", path + "/revoke") if revoke else self._query("GET", path)
        )
        link: str = answer["link"]
        return link

    async def join_group(self, instance: str, link: str) -> str:
        """Join by invite link; the group's JID."""
        answer = await self._query("POST", f"/v1/instances/{instance}/groups/join", {"link": link})
        group: str = answer["group"]
        return group

    async def update_group(
        self,
        instance: str,
        group: str,
        *,
        name: str | None = None,
        description: str | None = None,
        announce: bool | None = None,
        locked: bool | None = None,
    ) -> dict[str, Any]:
        """Change what is given (`announce`: only admins send; `locked`: only admins edit)."""
        changes = {"name": name, "description": description, "announce": announce,
                   "locked": locked}  # fmt: skip
        return await self._query(
            "PATCH", _group(instance, group), {k: v for k, v in changes.items() if v is not None}
        )

    # webhook deliveries
    async def deliveries(self, **filters: Any) -> dict[str, Any]:
        """A page of the delivery log (`endpoint`, `instance`, `event_id`, `outcome`, `since`,
        `until`, `limit`, `before`), newest first; its `next` is the following page's `before`."""
        result: dict[str, Any] = await self._json("GET", "/v1/deliveries", query=filters)
        return result

    async def retry_delivery(self, event_id: str, endpoint: str = "global") -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            "POST", "/v1/deliveries/retry", {"event_id": event_id, "endpoint": endpoint}
        )
        return result

    async def recover(self, endpoint: str, since: str, until: str | None = None) -> dict[str, Any]:
        """Deliver again `endpoint`'s dead letters of [since, until) (ISO 8601 times)."""
        payload = {"endpoint": endpoint, "since": since, "until": until}
        result: dict[str, Any] = await self._json(
            "POST", "/v1/deliveries/recover", {k: v for k, v in payload.items() if v}
        )
        return result

    async def endpoints(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._json("GET", "/v1/endpoints"))["endpoints"]
        return result

    async def enable_endpoint(self, endpoint: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            "POST", "/v1/endpoints/enable", {"endpoint": endpoint}
        )
        return result

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


def _segment(value: str) -> str:
    """A path segment: a JID's `@` and `:` as they are, anything else that needs it escaped."""
    return quote(value, safe="@:")


def _contact(instance: str, jid: str) -> str:
    return f"/v1/instances/{instance}/contacts/{_segment(jid)}"


def _group(instance: str, group: str) -> str:
    return f"/v1/instances/{instance}/groups/{_segment(group)}"


def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_error:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        errors = body.get("errors")
        raise RelayError(
            response.status_code,
            body.get("code", "error"),
            body.get("detail", response.text[:200]),
            response.headers.get("x-request-id"),
            title=body.get("title") or response.reason_phrase,
            errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
        )


def _json_or_raise(response: httpx.Response) -> Any:
    _raise_for_problem(response)
    return response.json() if response.content else None
