"""What a `wabus` command talks to: the settings from the environment, and the relay and NATS
they name — or, when they name none, those of the `wabus dev` running in this folder."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import ValidationError

from wabus.settings import Settings, parse_api_keys
from wabus_cli.devstate import DEV_FILE, load_dev_state
from wabus_cli.failures import ExitCode, fail


def load_settings() -> Settings:
    """The settings from the environment, or exit 2 saying what is wrong with them. pydantic's
    own message quotes the value it refused, which may be a secret (a WABUS_WEBHOOK_SECRET
    without its prefix, an API key): the message here names the variable and the rule only."""
    try:
        settings = Settings()
        parse_api_keys(settings.api_keys)  # a bad WABUS_API_KEYS entry stops us here
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc']) or 'settings'}: {problem['msg']}"
            for problem in error.errors(include_input=False, include_url=False)
        ]
        fail(problems[0], ExitCode.USAGE, *problems[1:])
    except ValueError as error:  # WABUS_API_KEYS: the message names the rule, not the entry
        fail(str(error), ExitCode.USAGE)
    return settings


@dataclass(frozen=True)
class RelayTarget:
    url: str
    key_id: str
    secret: str
    hint: str
    """What to do when it does not answer, depending on where the URL came from."""


def relay_target() -> RelayTarget:
    """The relay and key from WABUS_RELAY_URL / WABUS_API_KEYS, else from a running `wabus dev`."""
    env = load_settings()
    state = load_dev_state(env.data_dir)
    from_env = os.environ.get("WABUS_RELAY_URL")
    url = from_env or (state.relay_url if state else "")
    api_key = (env.api_keys[0] if env.api_keys else "") or (state.api_key if state else "")
    if not url or not api_key:
        fail(
            "no relay to talk to: start `wabus dev` in this folder, "
            "or set WABUS_RELAY_URL and WABUS_API_KEYS",
            ExitCode.USAGE,
        )
    hint = (
        "start it, or set WABUS_RELAY_URL to one that runs"
        if from_env
        else f"start it with `wabus dev` (the URL is from {env.data_dir / DEV_FILE}), "
        "or set WABUS_RELAY_URL"
    )
    head, _, secret = api_key.partition(":")
    key_id = head.partition("@")[0]  # `id@instance|…:secret`: the scope is not part of the id
    return RelayTarget(url, key_id, secret, hint)


@dataclass(frozen=True)
class NatsTarget:
    url: str
    settings: Settings
    hint: str


def nats_target() -> NatsTarget:
    """NATS URL and settings from NATS_URL, else from a running `wabus dev` (its prefix too)."""
    env = load_settings()
    state = load_dev_state(env.data_dir)
    url = env.nats_url or (state.nats_url if state else None)
    if not url:
        fail(
            "no NATS to talk to: start `wabus dev` in this folder, or set NATS_URL",
            ExitCode.USAGE,
        )
    if state and not env.nats_url and "WABUS_SUBJECT_PREFIX" not in os.environ:
        env = env.model_copy(update={"subject_prefix": state.subject_prefix})
    hint = (
        "start it, or set NATS_URL to one that runs"
        if env.nats_url
        else f"start it with `wabus dev` (the URL is from {env.data_dir / DEV_FILE}), "
        "or set NATS_URL"
    )
    return NatsTarget(url, env, hint)
