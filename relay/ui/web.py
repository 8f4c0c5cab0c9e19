"""What every dashboard page shares: templates, the session check (a login redirect without
one), the CSRF check of every POST, form parsing, and showing a problem."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from nats.errors import Error as NatsError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from relay.problems import Problem
from relay.ui.auth import Gate, Session
from relay.ui.calls import Failed
from wabus.logs import get_logger

log = get_logger(__name__)

COOKIE = "wabus_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 64 << 10
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
Page = Callable[[Request], Awaitable[Response]]


@dataclass
class Ui:
    """The dashboard's shared parts, made once per app."""

    gate: Gate
    templates: jinja2.Environment

    def page(
        self, request: Request, name: str, http_status: int = 200, /, **context: Any
    ) -> HTMLResponse:
        """Render template `name`; `context` may hold any name (`status` too)."""
        session: Session | None = getattr(request.state, "session", None)
        csrf = self.gate.csrf_token(session) if session else ""
        html = self.templates.get_template(name).render(
            request=request, session=session, csrf=csrf, **context
        )
        headers = {"Content-Security-Policy": UI_CSP, "Cache-Control": "no-store"}
        return HTMLResponse(html, status_code=http_status, headers=headers)

    def failed(self, request: Request, failed: Failed, back: str) -> HTMLResponse:
        """A problem as a page of its own: title, code and detail, with the problem's status."""
        return self.page(request, "error.html", failed.status, failed=failed, back=back)


def make_templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("relay.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


async def form_of(request: Request) -> dict[str, str]:
    """An url-encoded form body (what the pages' forms send), cached on the request; a body
    over `MAX_FORM_BYTES` is a 413 problem."""
    cached: dict[str, str] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Problem(413, "body_too_large", f"a form is at most {MAX_FORM_BYTES} bytes")
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.form = form
    return form


def login_redirect(request: Request) -> Response:
    """To the login, then back; a part of a page that refreshes itself (htmx) sends the whole
    page there instead of drawing the login form inside itself."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or request.headers.get("hx-request"):
        target = request.headers.get("hx-current-url", "") if request.method == "GET" else ""
        target = "/ui" + target.split("/ui", 1)[1] if "/ui" in target else "/ui"
    login = f"/ui/login?next={quote(target)}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": login})
    return RedirectResponse(login, status_code=303)


def protected(ui: Ui, page: Page) -> Page:
    """`page` behind the login; a POST also needs the session's CSRF token (form field or
    header), else 403 `csrf_failed`."""

    async def guarded(request: Request) -> Response:
        session = ui.gate.verify(request.cookies.get(COOKIE))
        if session is None:
            return login_redirect(request)
        request.state.session = session
        if request.method == "POST":
            try:
                given = request.headers.get(CSRF_HEADER) or (await form_of(request)).get(CSRF_FIELD)
            except Problem as problem:
                return ui.failed(request, Failed.of(problem), "/ui")
            if not ui.gate.csrf_ok(session, given):
                log.warning("dashboard request without a valid CSRF token", path=request.url.path)
                failed = Failed(
                    403,
                    "csrf_failed",
                    "this form is stale or did not come from the dashboard: reload the page "
                    "and try again",
                )
                return ui.failed(request, failed, "/ui")
        try:
            return await page(request)
        except Problem as problem:  # a path parameter that names nothing, say
            return ui.failed(request, Failed.of(problem), "/ui")

    return guarded


async def attempt(action: Awaitable[Any]) -> tuple[Any, Failed | None]:
    """Run an action; a problem (or the bus being away) comes back as `Failed`, never raised."""
    try:
        return await action, None
    except Problem as problem:
        return None, Failed.of(problem)
    except NatsError as error:
        log.warning("dashboard action met a bus error", error=repr(error))
        return None, Failed(503, "bus_unavailable", f"NATS did not answer: {error!r}")


def set_session_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
