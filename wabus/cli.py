"""The `wabus` command. Typer gives typed options and generated `--help` for free."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from relay.webhooks.signature import new_secret
from wabus.logs import configure_logging
from wabus.serve import run_until_signal
from wabus.settings import LogFormat, Settings, parse_api_keys

if TYPE_CHECKING:
    from relay.client import RelayClient

app = typer.Typer(help="wabus: WhatsApp connector plus webhook bus.", no_args_is_help=True)
keys_app = typer.Typer(help="Credentials for the relay API and webhooks.", no_args_is_help=True)
sim_app = typer.Typer(
    help="Drive the sim engine (a stand-in for the WhatsApp network).", no_args_is_help=True
)
instances_app = typer.Typer(help="Create, list, show and delete instances.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(sim_app, name="sim")
app.add_typer(instances_app, name="instances")


def _settings() -> Settings:
    """The settings from the environment, or exit 2 saying what is wrong with them. pydantic's
    own message quotes the value it refused, which may be a secret (a WABUS_WEBHOOK_SECRET
    without its prefix, an API key): the message here names the variable and the rule only."""
    try:
        settings = Settings()
        parse_api_keys(settings.api_keys)  # a bad WABUS_API_KEYS entry stops us here
    except ValidationError as error:
        for problem in error.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in problem["loc"]) or "settings"
            typer.echo(f"✘ {where}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
    except ValueError as error:  # WABUS_API_KEYS: the message names the rule, not the entry
        typer.echo(f"✘ {error}", err=True)
        raise typer.Exit(2) from None
    return settings


@app.command()
def dev(
    relay_port: Annotated[int, typer.Option(help="Relay API port (a free one if taken).")] = 8080,
    connector_port: Annotated[int, typer.Option(help="Connector health port.")] = 8081,
    inspector_port: Annotated[int, typer.Option(help="Built-in webhook inspector port.")] = 8082,
    nats_port: Annotated[int, typer.Option(help="Embedded nats-server port.")] = 4222,
    phone: Annotated[
        str | None,
        typer.Option(help="neonize: pair this phone number with a code instead of the QR."),
    ] = None,
) -> None:
    """Run everything locally: embedded NATS, connector (sim engine unless WABUS_ENGINE says
    otherwise), relay, webhook inspector. With WABUS_ENGINE=neonize it shows the pairing QR."""
    from wabus.devstack import DevPorts, run_dev

    env = _settings()
    configure_logging(env.log_level, LogFormat.CONSOLE)
    ports = DevPorts(relay_port, connector_port, inspector_port, nats_port)
    try:
        run_until_signal(lambda stop: run_dev(env, ports, stop, phone=phone))
    except Exception as error:
        from wabus.console import explain

        typer.echo(f"✘ wabus dev stopped: {explain(error)}", err=True)
        raise typer.Exit(1) from None


@app.command()
def connector() -> None:
    """Run the connector (same as `python -m connector`)."""
    from connector.service import main

    _settings()  # a configuration error said without the values
    main()


@app.command()
def relay() -> None:
    """Run the relay (same as `python -m relay`)."""
    from relay.service import main

    _settings()  # a configuration error said without the values
    main()


@keys_app.command("new")
def keys_new(key_id: Annotated[str, typer.Option(help="Id of the API key.")] = "main") -> None:
    """Print a new API key (for WABUS_API_KEYS) and a new webhook secret (WABUS_WEBHOOK_SECRET).

    The one place secrets are printed in full: made here, for you to store, shown once."""
    typer.echo(f"WABUS_API_KEYS={key_id}:{secrets.token_urlsafe(32)}")
    typer.echo(f"WABUS_WEBHOOK_SECRET={new_secret()}")


def _client_config() -> tuple[str, str, str]:
    """Relay URL and key from WABUS_RELAY_URL / WABUS_API_KEYS, else from a running `wabus dev`."""
    import os

    from wabus.devstack import load_dev_state

    env = _settings()
    state = load_dev_state(env.data_dir)
    url = os.environ.get("WABUS_RELAY_URL") or (state.relay_url if state else "")
    api_key = (env.api_keys[0] if env.api_keys else "") or (state.api_key if state else "")
    if not url or not api_key:
        raise typer.BadParameter(
            "set WABUS_RELAY_URL and WABUS_API_KEYS, or start `wabus dev` here"
        )
    head, _, secret = api_key.partition(":")
    key_id = head.partition("@")[0]  # `id@instance|…:secret`: the scope is not part of the id
    return url, key_id, secret


def _call_relay(call: Callable[[RelayClient], Awaitable[Any]]) -> Any:
    """Run one API call with the configured relay and key; a refusal exits 1 with its code."""
    from relay.client import RelayClient, RelayError

    url, key_id, secret = _client_config()

    async def go() -> Any:
        async with RelayClient(url, key_id, secret) as client:
            return await call(client)

    try:
        return asyncio.run(go())
    except RelayError as error:
        typer.echo(f"refused: {error}", err=True)
        raise typer.Exit(1) from error


def _print(result: Any) -> None:
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


@app.command()
def send(
    instance: str,
    to: Annotated[str, typer.Argument(help="Phone number (digits) or JID.")],
    text: str,
    idempotency_key: Annotated[str | None, typer.Option(help="Makes retries safe.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for WhatsApp's answer.")] = 0,
) -> None:
    """Send a text message through the relay."""
    message = {"to": to, "text": text}
    typer.echo(
        json.dumps(
            _call_relay(
                lambda c: c.send(instance, message, idempotency_key=idempotency_key, wait=wait)
            )
        )
    )


@app.command()
def status(instance: str) -> None:
    """Show an instance's session state (open, qr, closed, ...), phone and reason."""
    _print(_call_relay(lambda c: c.status(instance)))


@app.command()
def qr(
    instance: str,
    png: Annotated[Path | None, typer.Option(help="Write the QR as a PNG file.")] = None,
    svg: Annotated[Path | None, typer.Option(help="Write the QR as an SVG file.")] = None,
) -> None:
    """Show the QR to scan (WhatsApp > Linked devices) in the terminal, or write it to a file."""
    if png or svg:
        kind, path = ("png", png) if png else ("svg", svg)
        assert path is not None
        path.write_bytes(_call_relay(lambda c: c.qr_image(instance, kind)))
        typer.echo(f"wrote {path}")
        return
    import segno

    answer = _call_relay(lambda c: c.qr(instance))
    segno.make_qr(answer["qr"], error="l").terminal(compact=True)
    typer.echo(f"expires at {answer['expires_at']}")


@app.command()
def pair(
    instance: str,
    phone: Annotated[str, typer.Argument(help="The phone number to link, international.")],
) -> None:
    """Ask for a pairing code to type on the phone (instead of scanning the QR)."""
    answer = _call_relay(lambda c: c.pair(instance, phone))
    if answer.get("pair_code"):
        typer.echo(f"pairing code: {answer['pair_code']}")
    else:
        typer.echo("requested; no code yet — run `wabus status` again in a moment")


@app.command()
def logout(instance: str) -> None:
    """Log the instance's device out of WhatsApp (it must be paired again)."""
    _print(_call_relay(lambda c: c.logout(instance)))


@instances_app.command("create")
def instances_create(
    instance: str,
    webhook: Annotated[
        list[str] | None, typer.Option(help="A per-instance webhook URL (repeatable).")
    ] = None,
    events: Annotated[
        str, typer.Option(help="Comma-separated event filter for those webhooks.")
    ] = "*",
    stopped: Annotated[bool, typer.Option(help="Create it without starting a session.")] = False,
) -> None:
    """Create an instance; prints each webhook's secret (shown only this once)."""
    hooks = [{"url": url, "events": events.split(",")} for url in webhook or []]
    state = "stopped" if stopped else "running"
    _print(_call_relay(lambda c: c.create_instance(instance, webhooks=hooks, desired_state=state)))


@instances_app.command("list")
def instances_list() -> None:
    """List the instances the key may see."""
    _print(_call_relay(lambda c: c.list_instances()))


@instances_app.command("get")
def instances_get(instance: str) -> None:
    """Show an instance's configuration and status."""
    _print(_call_relay(lambda c: c.get_instance(instance)))


@instances_app.command("start")
def instances_start(instance: str) -> None:
    """Set an instance's desired state to running (the connector starts its session)."""
    _print(_call_relay(lambda c: c.update_instance(instance, desired_state="running")))


@instances_app.command("stop")
def instances_stop(instance: str) -> None:
    """Set an instance's desired state to stopped (the connector stops its session)."""
    _print(_call_relay(lambda c: c.update_instance(instance, desired_state="stopped")))


@instances_app.command("delete")
def instances_delete(instance: str) -> None:
    """Delete an instance (the connector stops its session)."""
    _call_relay(lambda c: c.delete_instance(instance))
    typer.echo(f"deleted {instance}")


def _nats_target() -> tuple[str, Settings]:
    """NATS URL and settings from NATS_URL, else from a running `wabus dev` (its prefix too)."""
    from wabus.devstack import load_dev_state

    env = _settings()
    state = load_dev_state(env.data_dir)
    nats_url = env.nats_url or (state.nats_url if state else None)
    if not nats_url:
        raise typer.BadParameter("set NATS_URL, or start `wabus dev` here")
    if state and not env.nats_url and "WABUS_SUBJECT_PREFIX" not in os.environ:
        env = env.model_copy(update={"subject_prefix": state.subject_prefix})
    return nats_url, env


@app.command()
def tail(
    instance: Annotated[str | None, typer.Argument(help="Only this instance.")] = None,
    event_type: Annotated[
        str | None,
        typer.Option("--type", "-t", help="Event type or NATS pattern: message.*, connection.>"),
    ] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print each envelope as JSON.")] = False,
) -> None:
    """Follow events on NATS live, one readable line each (Ctrl-C to stop)."""
    import nats

    from wabus.console import events_subject, follow, format_event

    nats_url, env = _nats_target()
    subject = events_subject(env.topology, instance, event_type)

    def render(envelope: dict[str, object]) -> str:
        return json.dumps(envelope, ensure_ascii=False) if raw else format_event(envelope)

    async def go(stop: asyncio.Event) -> None:
        creds = {"user_credentials": str(env.nats_creds)} if env.nats_creds else {}
        nc = await nats.connect(nats_url, name="wabus-tail", **creds)
        try:
            await follow(nc, subject, lambda line: typer.echo(line), render)
            typer.echo(
                f"following {subject} on {nats_url.rpartition('@')[2]} (Ctrl-C to stop)", err=True
            )
            await stop.wait()
        finally:
            await nc.close()

    run_until_signal(go)


@sim_app.command("inbound")
def sim_inbound(
    instance: str,
    sender: Annotated[str, typer.Option("--from", help="Sender phone number or JID.")],
    text: Annotated[str, typer.Option(help="Message text.")],
    repeat: Annotated[int, typer.Option(help="Emit this many numbered messages.")] = 1,
) -> None:
    """Make the sim engine receive a message, as if someone wrote to the instance."""
    import nats

    from wabus.devstack import load_dev_state

    env = _settings()
    state = load_dev_state(env.data_dir)
    nats_url = env.nats_url or (state.nats_url if state else None)
    if not nats_url:
        raise typer.BadParameter("set NATS_URL, or start `wabus dev` here")

    async def go() -> dict[str, object]:
        nc = await nats.connect(nats_url)
        try:
            payload = json.dumps({"from": sender, "text": text, "repeat": repeat}).encode()
            answer = await nc.request(env.topology.sim(instance, "inbound"), payload, timeout=5)
            result: dict[str, object] = json.loads(answer.data)
            return result
        finally:
            await nc.close()

    result = asyncio.run(go())
    typer.echo(json.dumps(result))
    if not result.get("ok"):
        raise typer.Exit(1)


def main() -> None:
    app()


__all__ = ["app", "main"]
