"""Endpoints as the dispatcher sees them: filters, rotation, names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relay.delivery.targets import Target, global_target, instance_targets
from relay.webhooks.signature import WebhookSecret, new_secret
from schemas.instances import InstanceConfig, WebhookEndpoint
from schemas.subjects import Topology
from wabus.settings import Settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def config(**endpoint: object) -> InstanceConfig:
    hook = WebhookEndpoint.model_validate(
        {"id": "crm", "url": "https://crm.example/hook", "secret": new_secret(), **endpoint}
    )
    return InstanceConfig(id="acme", webhooks=[hook], created_at=NOW, updated_at=NOW)


def test_event_filters_are_globs() -> None:
    [target] = instance_targets(config(events=["message.*", "connection.open"]))
    assert target.wants("message.received")
    assert target.wants("message.receipt")
    assert target.wants("connection.open")
    assert not target.wants("connection.close")
    assert not target.wants("presence.chat")


def test_rotation_signs_with_both_secrets_until_it_ends() -> None:
    old, new = new_secret(), new_secret()
    [target] = instance_targets(
        config(secret=new, previous_secret=old, rotation_ends_at=NOW + timedelta(hours=1))
    )
    assert len(target.secrets(NOW)) == 2
    assert len(target.secrets(NOW + timedelta(hours=2))) == 1


def test_the_global_endpoint_signs_with_the_previous_secret_while_it_is_set() -> None:
    settings = Settings(
        webhook_url="https://app.example/hook",
        webhook_secret=new_secret(),
        webhook_previous_secret=new_secret(),
    )
    target = global_target(settings)
    assert target is not None
    assert target.key == "global"
    assert target.instance is None
    assert len(target.secrets(NOW)) == 2
    assert global_target(Settings()) is None


def test_names_never_meet() -> None:
    secret = WebhookSecret(new_secret())
    a = Target(key="a-b/c", url="https://x.example", secret=secret, instance="a-b")
    b = Target(key="a/b-c", url="https://x.example", secret=secret, instance="a")
    assert a.consumer != b.consumer
    topology = Topology("wa")
    assert a.events_subject(topology) == "wa.evt.a-b.>"
    assert a.dead_letters_subject(topology) == "wa.dlq.a-b.c.>"
    glob = Target(key="global", url="https://x.example", secret=secret)
    assert glob.events_subject(topology) == "wa.evt.>"
    assert glob.dead_letters_subject(topology) == "wa.dlq.*._global.>"
