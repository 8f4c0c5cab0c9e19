"""The `wabus` command. Typer gives typed options and generated `--help` for free.

Every way a command can fail ends in one line on stderr and an exit code (`failures.ExitCode`):
1 refused or failed, 2 bad usage or settings, 3 the relay or NATS does not answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from relay.webhooks.signature import new_secret
from wabus.logs import configure_logging, shown_url
from wabus.settings import LogFormat
from wabus_cli.console import events_subject, explain, follow, format_event
from wabus_cli.failures import ExitCode, fail
from wabus_cli.interrupts import run_until_interrupted
from wabus_cli.messages import SendOptions, UsageError, build_message
from wabus_cli.natsclient import NatsUnreachable, close_quietly, connect_cli
from wabus_cli.relaycalls import call_relay, check_send
from wabus_cli.targets import load_settings, nats_target

app = typer.Typer(help="wabus: WhatsApp connector plus webhook bus.", no_args_is_help=True)
keys_app = typer.Typer(help="Credentials for the relay API and webhooks.", no_args_is_help=True)
sim_app = typer.Typer(
    help="Drive the sim engine (a stand-in for the WhatsApp network).", no_args_is_help=True
)
instances_app = typer.Typer(help="Create, list, show and delete instances.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(sim_app, name="sim")
app.add_typer(instances_app, name="instances")


def _say(line: str) -> None:
    """A status line (not data): stderr, so that stdout stays what a script reads."""
    typer.echo(line, err=True)


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
    otherwise), relay, webhook inspector. With WABUS_ENGINE=neonize it shows the pairing QR.
    One per folder; Ctrl-C stops it."""
    from wabus_cli.devlock import DevAlreadyRunning
    from wabus_cli.devstack import DevPorts, run_dev

    env = load_settings()
    configure_logging(env.log_level, LogFormat.CONSOLE)
    ports = DevPorts(relay_port, connector_port, inspector_port, nats_port)
    try:
        run_until_interrupted(lambda stop: run_dev(env, ports, stop, phone=phone))
    except DevAlreadyRunning as error:
        fail(str(error))
    except NatsUnreachable as error:  # only with NATS_URL: otherwise it starts its own
        fail(
            f"{error}: start it, or unset NATS_URL (wabus dev then runs its own)",
            ExitCode.UNREACHABLE,
        )
    except Exception as error:  # whatever stopped the stack: one line; LOG_LEVEL=DEBUG for more
        logging.getLogger(__name__).debug("wabus dev failed", exc_info=error)
        fail(f"wabus dev stopped: {explain(error)}")
    _say("✔ wabus dev stopped")


@app.command()
def connector() -> None:
    """Run the connector (same as `python -m connector`)."""
    from connector.service import main

    load_settings()  # a configuration error said without the values
    main()


@app.command()
def relay() -> None:
    """Run the relay (same as `python -m relay`)."""
    from relay.service import main

    load_settings()  # a configuration error said without the values
    main()


@keys_app.command("new")
def keys_new(key_id: Annotated[str, typer.Option(help="Id of the API key.")] = "main") -> None:
    """Print a new API key (for WABUS_API_KEYS) and a new webhook secret (WABUS_WEBHOOK_SECRET).

    The one place secrets are printed in full: made here, for you to store, shown once."""
    typer.echo(f"WABUS_API_KEYS={key_id}:{secrets.token_urlsafe(32)}")
    typer.echo(f"WABUS_WEBHOOK_SECRET={new_secret()}")


def _print(result: Any) -> None:
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


@app.command()
def send(
    instance: str,
    to: Annotated[str, typer.Argument(help="Phone number (digits) or JID.")],
    text: Annotated[
        str | None,
        typer.Argument(
            help="The text; a caption, a poll's question, an edit's new text, an emoji."
        ),
    ] = None,
    poll: Annotated[list[str] | None, typer.Option(help="A poll option (repeat: 2 to 12).")] = None,
    choices: Annotated[int, typer.Option(help="How many poll options a voter may pick.")] = 1,
    image: Annotated[Path | None, typer.Option(help="Send this image.")] = None,
    video: Annotated[Path | None, typer.Option(help="Send this video.")] = None,
    document: Annotated[Path | None, typer.Option(help="Send this file as a document.")] = None,
    audio: Annotated[Path | None, typer.Option(help="Send this audio as it is.")] = None,
    voice: Annotated[
        Path | None, typer.Option(help="Send this audio (MP3, WAV, …) as a voice note.")
    ] = None,
    sticker: Annotated[
        Path | None, typer.Option(help="Send this PNG/JPEG/WebP as a sticker.")
    ] = None,
    contact: Annotated[
        list[str] | None, typer.Option(help="A contact card NAME:PHONE[,PHONE] (repeatable).")
    ] = None,
    react: Annotated[str | None, typer.Option(help="React with TEXT to this message id.")] = None,
    edit: Annotated[str | None, typer.Option(help="Replace this message's text by TEXT.")] = None,
    delete: Annotated[str | None, typer.Option(help="Delete this message for everyone.")] = None,
    forward: Annotated[str | None, typer.Option(help="Forward this message (one seen).")] = None,
    reply_to: Annotated[str | None, typer.Option(help="Quote this message id.")] = None,
    link_preview: Annotated[bool, typer.Option(help="Show a preview of the first link.")] = False,
    view_once: Annotated[bool, typer.Option(help="Image, video or voice shown once.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Makes retries safe.")] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for WhatsApp's answer; a failure exits 1.")
    ] = 0,
) -> None:
    """Send a message through the relay: text by default, or the kind an option names."""
    options = SendOptions(
        text=text,
        poll=poll or [],
        choices=choices,
        image=image,
        video=video,
        document=document,
        audio=audio,
        voice=voice,
        sticker=sticker,
        contact=contact or [],
        react=react,
        edit=edit,
        delete=delete,
        forward=forward,
        reply_to=reply_to,
        link_preview=link_preview,
        view_once=view_once,
    )
    try:
        message = build_message(to, options)
    except UsageError as error:
        fail(str(error), ExitCode.USAGE)
    answer = call_relay(
        lambda c: c.send(instance, message, idempotency_key=idempotency_key, wait=wait)
    )
    typer.echo(json.dumps(answer))
    check_send(answer, wait)


@app.command()
def status(instance: str) -> None:
    """Show an instance's session state (open, qr, closed, ...), phone and reason."""
    _print(call_relay(lambda c: c.status(instance)))


@app.command()
def qr(
    instance: str,
    png: Annotated[Path | None, typer.Option(help="Write the QR as a PNG file.")] = None,
    svg: Annotated[Path | None, typer.Option(help="Write the QR as an SVG file.")] = None,
) -> None:
    """Show the QR to scan (WhatsApp > Linked devices) in the terminal, or write it to a file."""
    path = png or svg
    if path is not None:
        kind = "png" if png else "svg"
        path.write_bytes(call_relay(lambda c: c.qr_image(instance, kind)))
        typer.echo(f"wrote {path}")
        return
    import segno

    answer = call_relay(lambda c: c.qr(instance))
    segno.make_qr(answer["qr"], error="l").terminal(compact=True)
    typer.echo(f"expires at {answer['expires_at']}")


@app.command()
def pair(
    instance: str,
    phone: Annotated[str, typer.Argument(help="The phone number to link, international.")],
) -> None:
    """Ask for a pairing code to type on the phone (instead of scanning the QR)."""
    answer = call_relay(lambda c: c.pair(instance, phone))
    if answer.get("pair_code"):
        typer.echo(f"pairing code: {answer['pair_code']}")
    else:
        typer.echo("requested; no code yet — run `wabus status` again in a moment")


@app.command()
def logout(instance: str) -> None:
    """Log the instance's device out of WhatsApp (it must be paired again)."""
    _print(call_relay(lambda c: c.logout(instance)))


@app.command()
def check(
    instance: str,
    phones: Annotated[list[str], typer.Argument(help="Phone numbers, international (up to 50).")],
    raw: Annotated[bool, typer.Option("--json", help="Print the relay's answer as JSON.")] = False,
) -> None:
    """Which phone numbers have WhatsApp: one line per number, with its JID when it has one."""
    numbers = call_relay(lambda c: c.check_numbers(instance, phones))
    if raw:
        _print(numbers)
        return
    for number in numbers:
        if number.get("on_whatsapp"):
            typer.echo(f"{number['phone']}\ton WhatsApp\t{number.get('jid') or ''}".rstrip())
        else:
            typer.echo(f"{number['phone']}\tnot on WhatsApp")


@app.command()
def groups(
    instance: str,
    raw: Annotated[bool, typer.Option("--json", help="Print the relay's answer as JSON.")] = False,
) -> None:
    """List the groups the instance's account is in: JID, name, participants."""
    found = call_relay(lambda c: c.groups(instance))
    if raw:
        _print(found)
        return
    for group in found:
        count = len(group.get("participants") or [])
        typer.echo(f"{group['jid']}\t{group['name']}\t{count} participants")
    if not found:
        _say("no groups")


@app.command()
def group(
    instance: str,
    group_jid: Annotated[str, typer.Argument(help="The group's JID, <digits>@g.us.")],
) -> None:
    """Show a group: name, description, settings, participants."""
    _print(call_relay(lambda c: c.group(instance, group_jid)))


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
    _print(call_relay(lambda c: c.create_instance(instance, webhooks=hooks, desired_state=state)))


@instances_app.command("list")
def instances_list() -> None:
    """List the instances the key may see."""
    _print(call_relay(lambda c: c.list_instances()))


@instances_app.command("get")
def instances_get(instance: str) -> None:
    """Show an instance's configuration and status."""
    _print(call_relay(lambda c: c.get_instance(instance)))


@instances_app.command("start")
def instances_start(instance: str) -> None:
    """Set an instance's desired state to running (the connector starts its session)."""
    _print(call_relay(lambda c: c.update_instance(instance, desired_state="running")))


@instances_app.command("stop")
def instances_stop(instance: str) -> None:
    """Set an instance's desired state to stopped (the connector stops its session)."""
    _print(call_relay(lambda c: c.update_instance(instance, desired_state="stopped")))


@instances_app.command("delete")
def instances_delete(instance: str) -> None:
    """Delete an instance (the connector stops its session)."""
    call_relay(lambda c: c.delete_instance(instance))
    typer.echo(f"deleted {instance}")


@app.command()
def tail(
    instance: Annotated[str | None, typer.Argument(help="Only this instance.")] = None,
    event_type: Annotated[
        str | None,
        typer.Option("--type", "-t", help="Event type or NATS pattern: message.*, connection.>"),
    ] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print each envelope as JSON.")] = False,
) -> None:
    """Follow events on NATS live, one readable line each (Ctrl-C to stop). A NATS restart is
    ridden out: one line when it goes away, one when it is back."""
    target = nats_target()
    env = target.settings
    subject = events_subject(env.topology, instance, event_type)
    creds = {"user_credentials": str(env.nats_creds)} if env.nats_creds else {}

    def render(envelope: dict[str, object]) -> str:
        return json.dumps(envelope, ensure_ascii=False) if raw else format_event(envelope)

    async def go(stop: asyncio.Event) -> None:
        nc = await connect_cli(target.url, "wabus-tail", _say, **creds)
        try:
            await follow(nc, subject, typer.echo, render)
            _say(f"following {subject} on {shown_url(target.url)} (Ctrl-C to stop)")
            await stop.wait()
        finally:
            await close_quietly(nc)

    try:
        run_until_interrupted(go)
    except NatsUnreachable as error:
        fail(f"{error}: {target.hint}", ExitCode.UNREACHABLE)


@sim_app.command("inbound")
def sim_inbound(
    instance: str,
    sender: Annotated[str, typer.Option("--from", help="Sender phone number or JID.")],
    text: Annotated[str, typer.Option(help="Message text.")],
    repeat: Annotated[int, typer.Option(help="Emit this many numbered messages.")] = 1,
) -> None:
    """Make the sim engine receive a message, as if someone wrote to the instance."""
    import nats.errors

    target = nats_target()
    env = target.settings
    subject = env.topology.sim(instance, "inbound")

    async def go() -> dict[str, object]:
        nc = await connect_cli(target.url, "wabus-sim", _say)
        try:
            payload = json.dumps({"from": sender, "text": text, "repeat": repeat}).encode()
            answer = await nc.request(subject, payload, timeout=5)
            result: dict[str, object] = json.loads(answer.data)
            return result
        finally:
            await close_quietly(nc)

    try:
        result = asyncio.run(go())
    except NatsUnreachable as error:
        fail(f"{error}: {target.hint}", ExitCode.UNREACHABLE)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        fail(
            f"no sim engine answers on {subject}: is the connector running with "
            "WABUS_ENGINE=sim (`wabus dev` uses it)?",
            ExitCode.UNREACHABLE,
        )
    typer.echo(json.dumps(result))
    if not result.get("ok"):
        fail(f"the sim engine refused: {result.get('error')}")


def main() -> None:
    app()


__all__ = ["app", "main"]
