"""One call to the relay's signed API from the command line: its answer, or one line saying what
went wrong — the relay is down, or it refused (with the API's own reason), never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import httpx
import typer

from relay.client import RelayClient, RelayError
from wabus_cli.failures import ExitCode, fail
from wabus_cli.targets import RelayTarget, relay_target

T = TypeVar("T")


def call_relay(call: Callable[[RelayClient], Awaitable[T]]) -> T:
    """Run `call` with the configured relay and key; a failure exits (see `ExitCode`)."""
    target = relay_target()

    async def go() -> T:
        async with RelayClient(target.url, target.key_id, target.secret) as client:
            return await call(client)

    try:
        return asyncio.run(go())
    except RelayError as error:
        refused(error)
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        unreachable(target, "does not answer", error)
    except httpx.TimeoutException as error:
        unreachable(target, "accepted the connection but did not answer in time", error)
    except httpx.HTTPError as error:  # a broken connection, a reply that is not HTTP, …
        unreachable(target, "broke off the exchange", error)


def unreachable(target: RelayTarget, what: str, error: Exception) -> NoReturn:
    """Where the relay was looked for, what happened, and what to run or set instead."""
    reason = str(error) or type(error).__name__
    fail(f"the relay at {target.url} {what} ({reason}): {target.hint}", ExitCode.UNREACHABLE)


def refused(error: RelayError) -> NoReturn:
    """The API's problem as it answered it: status, title and code, then its detail — or, for a
    request it found invalid, each field it names with the rule that field broke (the detail
    summarises the first few of those)."""
    title = f" {error.title}" if error.title else ""
    fields = [
        f"{entry.get('field', '?')}: {entry.get('message', '')}"
        + (f"  [{entry['type']}]" if entry.get("type") else "")
        for entry in error.errors
    ]
    first = f"the relay refused: {error.status}{title} ({error.code})"
    if not fields:
        first += f": {error.detail}"
    request = [f"request id: {error.request_id}"] if error.request_id else []
    fail(first, ExitCode.FAILED, *fields, *request)


def check_send(answer: dict[str, Any], wait: float) -> None:
    """A send WhatsApp refused under `--wait` exits 1 with its reason; one whose answer did not
    come in time says so on stderr (it is queued, not failed: exit 0)."""
    if answer.get("status") == "failed":
        fail(f"the send failed: {answer.get('error_code')}: {answer.get('error')}")
    if wait > 0 and answer.get("status") in {"accepted", "sending"}:
        typer.echo(
            f"… no answer from WhatsApp within {wait:g}s: the send is queued; its outcome comes "
            "as a message.sent or message.failed event (`wabus tail`)",
            err=True,
        )
