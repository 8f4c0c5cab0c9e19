"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
`python -m relay` (on its least-privilege NATS user from `infra/nats/`), `python -m connector`
(sim engine, pairing by QR) and nats-server, with a webhook receiver and Postgres for the
delivery log. One stack is shared by the module's tests; each test uses instances of its own.

On a failure, a screenshot of every open page is saved in the test's output folder (its path is
printed). With `WABUS_DOCS_SCREENSHOTS=<folder>` the main pages are saved there too (that is how
the pictures in `docs/dashboard.md` are made).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from relay.webhooks.signature import new_secret
from schemas.sim import DROP, INBOUND, SCAN, SENT
from tests.browser_support import (
    CHROMIUM_ARGS,
    FAILED,
    LoopThread,
    chromium_path,
    entered,
    loop_thread,
)
from tests.conftest import API_KEY_ID, API_SECRET
from tests.e2e.test_node_loss import HARNESS_PASSWORD, configs_with_harness
from tests.integration.test_infra_nats import PASSWORDS
from tests.processes import ready, service
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port, nats_server_binary

pytestmark = pytest.mark.e2e

PASSWORD = "dashboard-" + secrets.token_hex(8)
TIMEOUT_MS = 20_000


@dataclass
class Stack:
    url: str
    receiver: Receiver
    status: dict[str, int]
    """The receiver's answer to every delivery: the tests turn it to 500 to make dead letters."""
    thread: LoopThread
    harness_url: str

    def nats_request(self, subject: str, payload: Any) -> Any:
        async def ask() -> Any:
            nc = await nats.connect(self.harness_url)
            try:
                answer = await nc.request(subject, json.dumps(payload).encode(), timeout=5)
                return json.loads(answer.data)
            finally:
                await nc.close()

        return self.thread.run(ask())

    def sim(self, instance: str, action: str, payload: Any = None) -> Any:
        return self.nats_request(f"wa.sim.{instance}.{action}", payload or {})


@contextlib.contextmanager
def database(server_url: str) -> Iterator[str]:
    """A database of the module's own on the Postgres server, dropped afterwards."""
    name = "wabus_ui_" + secrets.token_hex(6)

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(server_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = server_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def nats_server(configs: Path, tmp: Path, port: int) -> Iterator[None]:
    """nats-server on `infra/nats/nats.conf` (its users, plus the harness user)."""
    command = [nats_server_binary(), "-c", str(configs / "nats.conf"), "-a", "127.0.0.1"]
    command += ["-p", str(port), "-m", str(free_port())]
    env = {**os.environ, **PASSWORDS, "NATS_STORE_DIR": str(tmp / "js")}
    with (tmp / "nats.log").open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    harness = f"nats://harness:{HARNESS_PASSWORD}@127.0.0.1:{port}"
    relay_nats = f"nats://relay:{PASSWORDS['NATS_RELAY_PASSWORD']}@127.0.0.1:{port}"
    secret = new_secret()
    status = {"code": 200}
    receiver = Receiver(secret, respond=lambda event: status["code"])
    relay_port, connector_port = free_port(), free_port()
    logs = [tmp / "connector.log", tmp / "relay.log"]
    common = {
        **os.environ,
        "WABUS_SUBJECT_PREFIX": "wa",
        "WABUS_HOST": "127.0.0.1",
        "LOG_FORMAT": "console",
    }
    with (
        nats_server(configs_with_harness(tmp / "nats-configs"), tmp, port),
        database(postgres_server_url) as database_url,
        loop_thread() as thread,
        entered(thread, running(receiver.app())) as receiver_url,
        service(
            "connector",
            common | {
                "NATS_URL": harness, "PORT": str(connector_port), "WABUS_ENGINE": "sim",
                "WABUS_SIM_PAIRING": "qr", "WABUS_SIM_QR_INTERVAL": "1.5",
                "WABUS_QR_MAX_REFRESHES": "1000", "WABUS_DATA_DIR": str(tmp / "connector"),
                "WABUS_SEND_INTERVAL": "0",
            },
            logs[0],
        ),
        service(
            "relay",
            common | {
                "NATS_URL": relay_nats, "PORT": str(relay_port),
                "WABUS_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
                "WABUS_WEBHOOK_URL": receiver_url + "/hook", "WABUS_WEBHOOK_SECRET": secret,
                "WABUS_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
                "WABUS_WEBHOOK_RETRY_SCHEDULE": "0,0.2", "DATABASE_URL": database_url,
                "WABUS_DASHBOARD_PASSWORD": PASSWORD, "WABUS_DATA_DIR": str(tmp / "relay"),
            },
            logs[1],
        ),
    ):  # fmt: skip
        url = f"http://127.0.0.1:{relay_port}"
        try:
            thread.run(eventually(lambda: ready(url), timeout=60))
            thread.run(eventually(lambda: ready(f"http://127.0.0.1:{connector_port}"), 60))
            yield Stack(url, receiver, status, thread, harness)
        finally:
            for path in logs:
                if path.exists():
                    lines = path.read_text().splitlines()
                    print(f"--- {path.name} (last 40 lines) ---\n" + "\n".join(lines[-40:]))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(
    browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[BrowserContext]:
    """A browser context of the test's own (its own cookies); every page it opened is
    photographed into the test's folder when the test failed."""
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone's width
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        if request.node.stash.get(FAILED, False):
            for number, page in enumerate(context.pages):
                path = tmp_path / f"page-{number}.png"
                page.screenshot(path=path, full_page=True)
                print(f"screenshot of {page.url}: {path}")
        context.close()


def log_in(page: Page, stack: Stack) -> None:
    page.goto(stack.url + "/ui/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Instances")


def create_instance(page: Page, stack: Stack, instance: str) -> None:
    page.goto(stack.url + "/ui/instances")
    page.fill("input[name=id]", instance)
    page.click("form[action='/ui/instances'] button[type=submit]")
    expect(page.locator("h1")).to_contain_text(f"Created {instance}")
    page.goto(f"{stack.url}/ui/instances/{instance}")


def open_instance(page: Page, stack: Stack, instance: str) -> None:
    """Create `instance` on the dashboard and pair it: once its QR shows, the sim phone scans."""
    create_instance(page, stack, instance)
    expect(page.locator("figure.qr svg")).to_be_visible()
    assert stack.sim(instance, SCAN) == {"ok": True}
    expect(page.locator("#state")).to_have_text("open")


def docs_screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("WABUS_DOCS_SCREENSHOTS")
    if folder:
        phone = page.viewport_size
        page.set_viewport_size({"width": 1000, "height": 720})
        page.screenshot(path=Path(folder) / f"{name}.png")
        if phone:
            page.set_viewport_size(phone)


def test_without_a_session_every_page_redirects_to_the_login(
    stack: Stack, context: BrowserContext
) -> None:
    page = context.new_page()
    pages = ["/ui/instances", "/ui/instances/anyone", "/ui/events", "/ui/deliveries"]
    for path in pages:
        page.goto(stack.url + path)
        assert page.url.startswith(stack.url + "/ui/login?next=")
        expect(page.locator("h1")).to_have_text("Log in")
    refused = context.request.post(
        stack.url + "/ui/instances", form={"id": "sneaky"}, max_redirects=0
    )
    assert refused.status == 303
    assert refused.headers["location"].startswith("/ui/login")

    # a wrong password is refused and says why; the right one opens the page asked for
    page.goto(stack.url + "/ui/deliveries")
    page.fill("input[name=password]", "not-" + PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".problem")).to_contain_text("wrong_password")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Deliveries")
    cookie = next(c for c in context.cookies() if c["name"] == "wabus_session")
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    for path in pages[:1] + pages[2:]:  # the positive control: with a session, no redirect
        page.goto(stack.url + path)
        assert "/ui/login" not in page.url

    # logout ends the session: the pages redirect again
    page.click("header button[type=submit]")
    expect(page.locator("h1")).to_have_text("Log in")
    page.goto(stack.url + "/ui/instances")
    assert page.url.startswith(stack.url + "/ui/login")
    assert context.request.get(stack.url + "/ui/instances", max_redirects=0).status == 303


def test_a_post_without_the_csrf_token_is_refused(stack: Stack, context: BrowserContext) -> None:
    page = context.new_page()
    log_in(page, stack)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    refused = context.request.post(stack.url + "/ui/instances", form={"id": "no-token"})
    assert refused.status == 403
    assert "csrf_failed" in refused.text()
    forged = context.request.post(
        stack.url + "/ui/instances", form={"id": "no-token", "csrf": "0" * len(csrf)}
    )
    assert forged.status == 403
    page.goto(stack.url + "/ui/instances")
    expect(page.locator("tr[data-instance='no-token']")).to_have_count(0)
    # the positive control: the same request with the page's token creates the instance
    accepted = context.request.post(
        stack.url + "/ui/instances", form={"id": "no-token", "csrf": csrf}
    )
    assert accepted.status == 201
    page.goto(stack.url + "/ui/instances")
    expect(page.locator("tr[data-instance='no-token']")).to_have_count(1)


def test_create_pair_by_qr_and_see_it_open(stack: Stack, context: BrowserContext) -> None:
    page = context.new_page()
    log_in(page, stack)
    create_instance(page, stack, "shop")
    qr = page.locator("figure.qr")
    expect(qr.locator("svg")).to_be_visible()
    expect(qr.locator(".countdown")).to_have_text(re.compile(r"^\d+ s$"))
    first_refresh = qr.get_attribute("data-refresh")
    first_svg = qr.locator("svg").inner_html()
    docs_screenshot(page, "qr")
    # the sim engine offers a new QR every 1.5 s: the page redraws it without a reload
    expect(qr).not_to_have_attribute("data-refresh", first_refresh or "")
    assert qr.locator("svg").inner_html() != first_svg

    # pairing by phone number instead: the code shows on the page
    page.fill("input[name=phone]", "5511977776666")
    page.click("form[action$='/pair'] button[type=submit]")
    expect(page.locator(".result .pair-code")).to_have_text(
        re.compile(r"^[0-9A-F]{4}-[0-9A-F]{4}$")
    )

    expect(page.locator("#state")).to_have_text("pairing")
    page.goto(stack.url + "/ui/instances")
    expect(page.locator("tr[data-instance='shop'] .state")).to_have_text("pairing")
    page.goto(stack.url + "/ui/instances/shop")
    assert stack.sim("shop", SCAN) == {"ok": True}
    expect(page.locator("#state")).to_have_text("open")
    expect(page.locator("figure.qr")).to_have_count(0)
    page.goto(stack.url + "/ui/instances")
    expect(page.locator("tr[data-instance='shop'] .state")).to_have_text("open")
    docs_screenshot(page, "instances")

    # stop and start again: the desired state, then the session, follow
    page.goto(stack.url + "/ui/instances/shop")
    page.click("form[action$='/stop'] button")
    expect(page.locator("#state")).to_have_text("stopped")
    page.click("form[action$='/start'] button")
    expect(page.locator("#state")).to_have_text("open")

    # deleting asks for the id first, then the instance is gone from the list
    page.goto(stack.url + "/ui/instances/shop/delete")
    page.fill("input[name=confirm]", "not-shop")
    page.click("button.danger")
    expect(page.locator(".problem")).to_contain_text("not_confirmed")
    page.goto(stack.url + "/ui/instances")
    expect(page.locator("tr[data-instance='shop']")).to_have_count(1)
    page.goto(stack.url + "/ui/instances/shop/delete")
    page.fill("input[name=confirm]", "shop")
    page.click("button.danger")
    expect(page.locator("h1")).to_have_text("Instances")
    expect(page.locator("tr[data-instance='shop']")).to_have_count(0)


def test_inbound_message_in_live_events_and_a_dead_letter_retried(
    stack: Stack, context: BrowserContext
) -> None:
    page = context.new_page()
    log_in(page, stack)
    open_instance(page, stack, "inbox")
    events = context.new_page()
    events.goto(stack.url + "/ui/events?instance=inbox&type=message.received")
    expect(events.locator("#feed-state")).to_have_text("live")

    stack.status["code"] = 500  # every attempt fails: the event becomes a dead letter
    text = "hello dashboard " + secrets.token_hex(4)
    assert stack.sim("inbox", INBOUND, {"from": "5511999990000", "text": text})["ok"]
    item = events.locator("li.event", has_text="message.received")
    expect(item).to_have_count(1)
    item.locator("summary").click()
    expect(item.locator("pre")).to_be_visible()
    expect(item.locator("pre")).to_contain_text(text)
    envelope = json.loads(item.locator("pre").inner_text())
    docs_screenshot(events, "events")

    # the filter: the instance's other events show unfiltered, not on the filtered page
    everything = context.new_page()
    everything.goto(stack.url + "/ui/events")
    expect(everything.locator("#feed-state")).to_have_text("live")
    assert stack.sim("inbox", DROP) == {"ok": True}  # connection.close, then .open again
    expect(everything.locator("li.event", has_text="connection.open")).to_have_count(1)
    expect(events.locator("li.event")).to_have_count(1)
    expect(events.locator("li.event[data-type='message.received']")).to_have_count(1)

    # pause: what arrives meanwhile is counted, not shown
    events.click("#pause")
    expect(events.locator("#feed-state")).to_have_text("paused")
    assert stack.sim("inbox", INBOUND, {"from": "5511999990000", "text": "while paused"})["ok"]
    expect(everything.locator("li.event", has_text="while paused")).to_have_count(1)
    events.click("#pause")
    expect(events.locator("#feed-dropped")).to_contain_text("1 event(s) arrived while paused")
    expect(events.locator("li.event")).to_have_count(1)
    everything.close()

    row = f"tr[data-event='{envelope['id']}'][data-outcome='dead']"
    reload_until(page, stack.url + "/ui/deliveries?outcome=dead&endpoint=global", row)
    failed_attempts = len(deliveries_of(stack, envelope["id"]))
    assert failed_attempts >= 1
    docs_screenshot(page, "deliveries")
    stack.status["code"] = 200
    page.locator(row).locator("button", has_text="Retry").click()
    expect(page.locator(".retry-outcome")).to_have_text("delivered")
    assert len(deliveries_of(stack, envelope["id"])) == failed_attempts + 1
    page.goto(stack.url + "/ui/deliveries?endpoint=global&outcome=delivered")
    expect(page.locator(f"tr[data-event='{envelope['id']}']")).to_have_count(1)


def deliveries_of(stack: Stack, event_id: str) -> list[dict[str, Any]]:
    return [event for event in stack.receiver.events() if event["id"] == event_id]


def reload_until(page: Page, url: str, selector: str, timeout: float = 30.0) -> None:
    """Load `url` again until it shows `selector` (the delivery log is no live page)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if page.locator(selector).count():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not show {selector} within {timeout}s")
        page.wait_for_timeout(300)


def test_a_test_send_reaches_the_sim_engine_and_its_message_sent_shows(
    stack: Stack, context: BrowserContext
) -> None:
    page = context.new_page()
    log_in(page, stack)
    page.goto(stack.url + "/ui/instances")  # with a webhook endpoint of its own
    page.fill("input[name=id]", "sender")
    page.fill("input[name=webhook_url]", stack.url + "/nowhere")
    page.fill("input[name=webhook_events]", "message.never")
    page.click("form[action='/ui/instances'] button[type=submit]")
    secret = page.locator("code.secret")
    expect(secret).to_have_text(re.compile(r"^whsec_"))
    page.goto(stack.url + "/ui/instances/sender")
    expect(page.locator("main")).to_contain_text("sender/wh_")
    assert "whsec_" not in page.content()  # shown once, on creation only
    expect(page.locator("figure.qr svg")).to_be_visible()
    assert stack.sim("sender", SCAN) == {"ok": True}
    expect(page.locator("#state")).to_have_text("open")
    watch = context.new_page()
    watch.goto(stack.url + "/ui/events?instance=sender&type=message.sent")
    expect(watch.locator("#feed-state")).to_have_text("live")

    text = "test send " + secrets.token_hex(4)
    page.fill("form#send input[name=to]", "5511988887777")
    page.fill("form#send input[name=text]", text)
    page.click("form#send button[type=submit]")
    expect(page.locator(".send-status")).to_have_text("sent")
    command_id = page.locator(".result[data-kind=send] code").first.inner_text()
    docs_screenshot(page, "instance")

    sent = stack.sim("sender", SENT)["sent"]
    assert [entry["data"]["text"] for entry in sent] == [text]
    item = watch.locator("li.event", has_text="message.sent")
    expect(item).to_have_count(1)
    expect(item.locator("pre")).to_contain_text(command_id)


def test_recover_a_time_range_and_enable_an_endpoint_a_410_disabled(
    stack: Stack, context: BrowserContext
) -> None:
    page = context.new_page()
    log_in(page, stack)
    open_instance(page, stack, "ranges")
    since = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    stack.status["code"] = 500
    text = "to recover " + secrets.token_hex(4)
    assert stack.sim("ranges", INBOUND, {"from": "5511966665555", "text": text})["ok"]
    event = stack.thread.run(
        stack.receiver.wait_for(lambda e: e["data"].get("text") == text, timeout=30)
    )
    row = f"tr[data-event='{event['id']}'][data-outcome='dead']"
    reload_until(page, f"{stack.url}/ui/deliveries?outcome=dead&since={since}", row)
    failed_attempts = len(deliveries_of(stack, event["id"]))

    stack.status["code"] = 200
    recover = page.locator("form[action='/ui/deliveries/recover']")
    recover.locator("select[name=endpoint]").select_option("global")
    recover.locator("input[name=since]").fill(since)
    recover.locator("button[type=submit]").click()
    expect(page.locator(".result[data-kind=recover]")).to_contain_text("Recovering")

    def redelivered() -> bool:
        return len(deliveries_of(stack, event["id"])) > failed_attempts

    stack.thread.run(eventually(_async(redelivered), timeout=30))

    # an endpoint that answers 410 Gone is disabled; the page enables it again
    stack.status["code"] = 410
    gone = "gone " + secrets.token_hex(4)
    assert stack.sim("ranges", INBOUND, {"from": "5511966665555", "text": gone})["ok"]
    enable = "tr[data-endpoint='global'] form[action='/ui/endpoints/enable'] button"
    reload_until(page, stack.url + "/ui/deliveries", enable)
    stack.status["code"] = 200
    page.locator(enable).click()
    expect(page.locator(".result[data-kind=enable]")).to_contain_text("enabled")
    expect(page.locator(enable)).to_have_count(0)


def _async(check: Callable[[], bool]) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def checked() -> bool:
        return check()

    return checked
