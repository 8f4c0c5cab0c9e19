"""Logging in and out: the password form, `wabus dev`'s one-time link, logout."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.ui.auth import fingerprint
from relay.ui.calls import Failed
from relay.ui.web import COOKIE, Ui, form_of, protected, set_session_cookie
from wabus.logs import get_logger

log = get_logger(__name__)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _next(value: str | None) -> str:
    """Where to go after logging in: a dashboard path only (no open redirect)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/instances"


def routes(ui: Ui) -> list[Route]:
    gate = ui.gate

    def login_page(
        request: Request, status: int = 200, failed: Failed | None = None, after: str = ""
    ) -> Response:
        return ui.page(
            request,
            "login.html",
            status,
            failed=failed,
            has_password=gate.has_password,
            form_token=gate.login_form_token(),
            next=_next(after or request.query_params.get("next")),
        )

    def signed_in(request: Request, target: str) -> Response:
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(request, response, gate.issue(), gate.lifetime)
        return response

    def throttled(request: Request) -> Response | None:
        wait = gate.throttle.retry_after(_client(request), time.monotonic())
        if not wait:
            return None
        failed = Failed(
            429, "too_many_logins", f"too many failed logins: try again in {int(wait)} s"
        )
        response = login_page(request, 429, failed)
        response.headers["Retry-After"] = str(int(wait))
        return response

    async def show(request: Request) -> Response:
        return login_page(request)

    async def submit(request: Request) -> Response:
        if refused := throttled(request):
            return refused
        form = await form_of(request)
        if not gate.login_form_ok(form.get("csrf")):
            failed = Failed(403, "csrf_failed", "the login form is stale: try again")
            return login_page(request, 403, failed, form.get("next", ""))
        if not gate.password_matches(form.get("password", "")):
            gate.throttle.failed(_client(request), time.monotonic())
            log.warning("dashboard login refused", client=_client(request))
            failed = Failed(401, "wrong_password", "that is not the dashboard password")
            return login_page(request, 401, failed, form.get("next", ""))
        gate.throttle.succeeded(_client(request))
        log.info("dashboard login", client=_client(request))
        return signed_in(request, _next(form.get("next")))

    async def link(request: Request) -> Response:
        if refused := throttled(request):
            return refused
        token = request.path_params["token"]
        if not gate.redeem(token):
            gate.throttle.failed(_client(request), time.monotonic())
            log.warning("dashboard login link refused", token=fingerprint(token))
            failed = Failed(
                403, "login_link_used", "this login link was used already or is not valid"
            )
            return login_page(request, 403, failed)
        log.info("dashboard login by one-time link", client=_client(request))
        return signed_in(request, "/ui/instances")

    async def logout(request: Request) -> Response:
        gate.revoke(request.state.session)
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    return [
        Route("/login", show, methods=["GET"]),
        Route("/login", submit, methods=["POST"]),
        Route("/login/{token}", link, methods=["GET"]),
        Route("/logout", protected(ui, logout), methods=["POST"]),
    ]
