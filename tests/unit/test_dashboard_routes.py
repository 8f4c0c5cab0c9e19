"""The dashboard's routes in process on fakes: off without a credential, `/` leads to it, the
login bounded per client, and a problem shown by its title and code (the browser tests in
`tests/e2e/test_dashboard.py` cover the pages against the real services)."""

from __future__ import annotations

import re

import httpx
from pydantic import SecretStr

from tests.fakes import Fakes
from tests.relay_helpers import relay_on, route_settings

PASSWORD = "a-dashboard-password"


def form_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def log_in(relay: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    token = form_token(await relay.get("/ui/login"))
    return await relay.post("/ui/login", data={"csrf": token, "password": password})


async def test_without_a_credential_the_dashboard_is_off_and_says_how_to_turn_it_on() -> None:
    async with relay_on(Fakes()) as relay:
        for path in ("/ui/instances", "/ui/login", "/ui/anything"):
            off = await relay.get(path)
            assert off.status_code == 404
            assert "WABUS_DASHBOARD_PASSWORD" in off.text
        assert (await relay.get("/")).headers["location"] == "/ui/"
    settings = route_settings(dashboard_password=SecretStr(PASSWORD))
    async with relay_on(Fakes(), settings) as relay:  # the control: on with a password
        assert (await relay.get("/ui/instances")).status_code == 303
        assert (await relay.get("/ui/login")).status_code == 200


async def test_failed_logins_are_bounded_then_refused_even_with_the_password() -> None:
    settings = route_settings(dashboard_password=SecretStr(PASSWORD))
    async with relay_on(Fakes(), settings) as relay:
        for _ in range(5):
            wrong = await log_in(relay, "wrong")
            assert wrong.status_code == 401
            assert "wrong_password" in wrong.text
        refused = await log_in(relay)
        assert refused.status_code == 429
        assert "too_many_logins" in refused.text
        assert int(refused.headers["retry-after"]) > 0
    async with relay_on(Fakes(), settings) as relay:  # the control: the password works
        accepted = await log_in(relay)
        assert accepted.status_code == 303
        assert "wabus_session=" in accepted.headers["set-cookie"]
        assert "httponly" in accepted.headers["set-cookie"].lower()
        assert "samesite=strict" in accepted.headers["set-cookie"].lower()


async def test_a_refused_action_shows_the_problems_title_and_code() -> None:
    settings = route_settings(dashboard_password=SecretStr(PASSWORD))
    async with relay_on(Fakes(), settings) as relay:
        await log_in(relay)
        page = await relay.get("/ui/instances")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        bad = await relay.post("/ui/instances", data={"csrf": form_token(page), "id": "Not Ok"})
        assert bad.status_code == 422
        assert "Unprocessable" in bad.text
        assert "invalid_body" in bad.text
        missing = await relay.get("/ui/instances/nobody")
        assert missing.status_code == 404
        assert "unknown_instance" in missing.text


async def test_a_self_refreshing_part_sends_the_whole_page_to_the_login() -> None:
    settings = route_settings(dashboard_password=SecretStr(PASSWORD))
    async with relay_on(Fakes(), settings) as relay:
        headers = {"HX-Request": "true", "HX-Current-URL": "http://relay.test/ui/instances"}
        part = await relay.get("/ui/instances/rows", headers=headers)
        assert part.status_code == 204
        assert part.headers["hx-redirect"] == "/ui/login?next=/ui/instances"
        page = await relay.get("/ui/instances/rows")  # the control: a plain request redirects
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=/ui/instances/rows"


async def test_the_session_cookie_is_secure_over_tls() -> None:
    settings = route_settings(dashboard_password=SecretStr(PASSWORD))
    async with relay_on(Fakes(), settings) as relay:
        relay.base_url = httpx.URL("https://relay.test")
        accepted = await log_in(relay)
        assert accepted.status_code == 303
        assert "secure" in accepted.headers["set-cookie"].lower()
        relay.base_url = httpx.URL("http://relay.test")  # the control: not over plain HTTP
        relay.cookies.clear()
        plain = await log_in(relay)
        assert "secure" not in plain.headers["set-cookie"].lower()
