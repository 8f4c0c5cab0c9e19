"""Instances on the dashboard: the list with live state, create, start / stop, delete (after a
confirmation); one instance's state, QR, phone pairing, logout and a test send."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.models import WaitQuery
from relay.problems import Problem
from relay.qr import render
from relay.routes import instances as api
from relay.routes import messages, session
from relay.routes.status import current_qr, current_status
from relay.state import RelayState, relay_state
from relay.ui.calls import Failed, invoke
from relay.ui.web import Page, Ui, attempt, form_of, protected
from schemas.ids import is_instance_id
from schemas.instances import SessionState

ACTION_WAIT = 10.0
"""Seconds a pairing request or a test send waits for the connector's answer."""


def _instance(request: Request) -> str:
    instance: str = request.path_params["instance"]
    if not is_instance_id(instance):
        raise Problem(404, "unknown_instance", "instance ids match ^[a-z0-9][a-z0-9_-]{0,62}$")
    return instance


async def _rows(state: RelayState) -> list[dict[str, Any]]:
    listed = await invoke(api.list_instances, state)
    rows = []
    for instance in listed["instances"]:
        status, failed = await attempt(current_status(state, instance["id"]))
        rows.append({**instance, "status": status, "failed": failed})
    return rows


async def _status_context(state: RelayState, instance: str) -> dict[str, Any]:
    status, failed = await attempt(current_status(state, instance))
    qr_svg = None
    qr = None
    if status is not None and status.state is SessionState.QR and status.qr:
        qr, _ = await attempt(current_qr(state, instance))
        if qr is not None:
            svg = render(qr.qr, "svg", 5).decode()
            qr_svg = Markup(svg)  # noqa: S704 - segno's own SVG of a QR payload, no input markup
    return {"instance": instance, "status": status, "failed": failed, "qr": qr, "qr_svg": qr_svg}


def routes(ui: Ui) -> list[Route]:
    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/instances", status_code=303)

    async def listing(request: Request) -> Response:
        rows, failed = await attempt(_rows(relay_state(request)))
        return ui.page(request, "instances.html", rows=rows or [], failed=failed)

    async def rows_fragment(request: Request) -> Response:
        rows, failed = await attempt(_rows(relay_state(request)))
        return ui.page(request, "_rows.html", rows=rows or [], failed=failed)

    async def create(request: Request) -> Response:
        form = await form_of(request)
        body: dict[str, Any] = {"id": form.get("id", "").strip()}
        if url := form.get("webhook_url", "").strip():
            events = [e.strip() for e in form.get("webhook_events", "").split(",") if e.strip()]
            body["webhooks"] = [{"url": url, **({"events": events} if events else {})}]
        state = relay_state(request)
        created, failed = await attempt(invoke(api.create_instance, state, body=body))
        if failed:
            return ui.failed(request, failed, "/ui/instances")
        return ui.page(request, "created.html", 201, created=created)

    async def detail(request: Request) -> Response:
        return await result_page(request, _instance(request), None)

    async def status_fragment(request: Request) -> Response:
        context = await _status_context(relay_state(request), _instance(request))
        return ui.page(request, "_status.html", **context)

    def desired(value: str) -> Page:
        async def change(request: Request) -> Response:
            instance = _instance(request)
            body = {"desired_state": value}
            state = relay_state(request)
            _, failed = await attempt(
                invoke(api.update_instance, state, body=body, instance=instance)
            )
            if failed:
                return ui.failed(request, failed, f"/ui/instances/{instance}")
            return RedirectResponse(f"/ui/instances/{instance}", status_code=303)

        return change

    async def confirm_delete(request: Request) -> Response:
        return ui.page(request, "delete.html", instance=_instance(request))

    async def delete(request: Request) -> Response:
        instance = _instance(request)
        form = await form_of(request)
        if form.get("confirm") != instance:
            rule = f"type the instance id {instance!r} to delete it"
            refused = Failed(422, "not_confirmed", rule)
            return ui.failed(request, refused, f"/ui/instances/{instance}/delete")
        _, failed = await attempt(
            invoke(api.delete_instance, relay_state(request), instance=instance)
        )
        if failed:
            return ui.failed(request, failed, "/ui/instances")
        return RedirectResponse("/ui/instances", status_code=303)

    async def result_page(
        request: Request, instance: str, result: dict[str, Any] | None
    ) -> Response:
        """The instance's page, with the result of an action taken on it when there was one."""
        state = relay_state(request)
        config, failed = await attempt(invoke(api.get_instance, state, instance=instance))
        if failed:
            return ui.failed(request, failed, "/ui/instances")
        context = await _status_context(state, instance)
        return ui.page(request, "instance.html", config=config, result=result, **context)

    async def pair(request: Request) -> Response:
        instance = _instance(request)
        form = await form_of(request)
        wait = WaitQuery.model_validate({"wait": ACTION_WAIT})
        body = {"phone": form.get("phone", "").strip()}
        answer, failed = await attempt(
            invoke(session.request_pair_code, relay_state(request), body=body, query=wait,
                   instance=instance)
        )  # fmt: skip
        if failed:
            return ui.failed(request, failed, f"/ui/instances/{instance}")
        return await result_page(request, instance, {"kind": "pair", **answer})

    async def logout(request: Request) -> Response:
        instance = _instance(request)
        answer, failed = await attempt(
            invoke(session.logout, relay_state(request), instance=instance)
        )
        if failed:
            return ui.failed(request, failed, f"/ui/instances/{instance}")
        return await result_page(request, instance, {"kind": "logout", **answer})

    async def send(request: Request) -> Response:
        instance = _instance(request)
        form = await form_of(request)
        wait = WaitQuery.model_validate({"wait": ACTION_WAIT})
        body = {"to": form.get("to", "").strip(), "text": form.get("text", "")}
        answer, failed = await attempt(
            invoke(messages.send_message, relay_state(request), body=body, query=wait,
                   instance=instance)
        )  # fmt: skip
        if failed:
            return ui.failed(request, failed, f"/ui/instances/{instance}")
        return await result_page(request, instance, {"kind": "send", **answer})

    pages = [
        ("/", home, "GET"),
        ("/instances", listing, "GET"),
        ("/instances", create, "POST"),
        ("/instances/rows", rows_fragment, "GET"),
        ("/instances/{instance}", detail, "GET"),
        ("/instances/{instance}/status", status_fragment, "GET"),
        ("/instances/{instance}/start", desired("running"), "POST"),
        ("/instances/{instance}/stop", desired("stopped"), "POST"),
        ("/instances/{instance}/delete", confirm_delete, "GET"),
        ("/instances/{instance}/delete", delete, "POST"),
        ("/instances/{instance}/pair", pair, "POST"),
        ("/instances/{instance}/logout", logout, "POST"),
        ("/instances/{instance}/send", send, "POST"),
    ]
    return [Route(path, protected(ui, page), methods=[method]) for path, page, method in pages]
