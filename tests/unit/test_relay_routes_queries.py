"""Query routes (contacts, groups) in-process on fakes: the request each asks of the connector,
the answer each returns, and every way a query fails — refused by the connector (its code and
status), invalid before asking, no connector, no answer in time, an unreadable answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from relay.openapi import openapi_document
from relay.routes import ENDPOINTS
from relay.stores.queries import QueryTimeout, UnreadableAnswer
from schemas.envelope import utc_now
from schemas.instances import InstanceConfig
from schemas.queries import QUERIES, QUERY_ERRORS, QueryAnswer
from tests.fakes import Asked, Fakes
from tests.relay_helpers import TENANT, TENANT_SECRET, refused, relay_on, signed_in_process
from tests.relay_helpers import route_settings as relay_settings

BASE = "/v1/instances/acme"
PHONE_JID = "5511999999999@s.whatsapp.net"
LID = "123456789012345@lid"
GROUP = "120363000000000000@g.us"
LINK = "https://chat.whatsapp.com/AbCdEfGhIj0123"
DONE = {"done": True}
GROUP_INFO = {
    "jid": GROUP,
    "name": "Team",
    "description": "who we are",
    "owner": PHONE_JID,
    "created_at": "2024-05-01T12:00:00.000Z",
    "announce": True,
    "locked": False,
    "participants": [{"jid": PHONE_JID, "admin": True}, {"jid": LID, "phone_jid": None}],
}


@dataclass(frozen=True)
class Case:
    """One route: what the client sends, the query the connector gets, what it answers."""

    method: str
    path: str
    body: Any
    query: str
    payload: dict[str, Any]
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.method} {self.path.removeprefix(BASE)}"


CASES = [
    Case(
        "POST", f"{BASE}/contacts/check", {"phones": ["+55 11 99999-9999", "5511888888888"]},
        "contacts_check", {"phones": ["5511999999999", "5511888888888"]},
        {"numbers": [
            {"phone": "5511999999999", "on_whatsapp": True, "jid": PHONE_JID},
            {"phone": "5511888888888", "on_whatsapp": False},
        ]},
    ),
    Case(
        "GET", f"{BASE}/contacts/{PHONE_JID}", None, "contact_profile", {"jid": PHONE_JID},
        {"jid": PHONE_JID, "lid": LID, "about": "hi", "picture_url": "https://pps.example/p"},
    ),
    Case(
        "GET", f"{BASE}/contacts/%2B55%2011%2099999-9999", None, "contact_profile",
        {"jid": "5511999999999"}, {"jid": PHONE_JID, "business": True, "name": "Shop"},
    ),
    Case(
        "GET", f"{BASE}/contacts/{LID}/lid", None, "lid_resolve", {"jid": LID},
        {"jid": LID, "phone_jid": PHONE_JID, "lid": LID, "known": True},
    ),
    Case(
        "GET", f"{BASE}/contacts/{PHONE_JID}/lid", None, "lid_resolve", {"jid": PHONE_JID},
        {"jid": PHONE_JID, "phone_jid": PHONE_JID, "known": False},
    ),
    Case(
        "POST", f"{BASE}/contacts/{PHONE_JID}/block", None, "contact_block",
        {"jid": PHONE_JID, "block": True}, DONE,
    ),
    Case(
        "POST", f"{BASE}/contacts/5511999999999/unblock", None, "contact_block",
        {"jid": "5511999999999", "block": False}, DONE,
    ),
    Case(
        "POST", f"{BASE}/contacts/{PHONE_JID}/presence", None, "presence_subscribe",
        {"jid": PHONE_JID}, DONE,
    ),
    Case("GET", f"{BASE}/groups", None, "groups_list", {}, {"groups": [GROUP_INFO]}),
    Case(
        "POST", f"{BASE}/groups", {"name": "Team", "participants": ["+55 11 99999-9999", LID]},
        "group_create", {"name": "Team", "participants": ["5511999999999", LID]}, GROUP_INFO,
    ),
    Case("GET", f"{BASE}/groups/{GROUP}", None, "group_info", {"group": GROUP}, GROUP_INFO),
    Case("DELETE", f"{BASE}/groups/{GROUP}", None, "group_leave", {"group": GROUP}, DONE),
    Case(
        "POST", f"{BASE}/groups/{GROUP}/participants",
        {"action": "promote", "participants": ["5511999999999", LID]}, "group_participants",
        {"group": GROUP, "action": "promote", "participants": ["5511999999999", LID]},
        {"results": [{"jid": PHONE_JID, "ok": True},
                     {"jid": LID, "ok": False, "error": "403"}]},
    ),
    Case(
        "GET", f"{BASE}/groups/{GROUP}/invite", None, "group_invite",
        {"group": GROUP, "revoke": False}, {"link": LINK},
    ),
    Case(
        "POST", f"{BASE}/groups/{GROUP}/invite/revoke", None, "group_invite",
        {"group": GROUP, "revoke": True}, {"link": LINK},
    ),
    Case("POST", f"{BASE}/groups/join", {"link": LINK}, "group_join", {"link": LINK},
         {"group": GROUP}),
    Case(
        "PATCH", f"{BASE}/groups/{GROUP}", {"announce": True, "name": "Core team"},
        "group_settings",
        {"group": GROUP, "name": "Core team", "description": None, "announce": True,
         "locked": None, "photo_base64": None},
        DONE,
    ),
]  # fmt: skip


def configured(
    fakes: Fakes, instance: str = "acme", desired_state: Literal["running", "stopped"] = "running"
) -> None:
    """A configured instance, as the instance routes would have written it."""
    now = utc_now()
    config = InstanceConfig(
        id=instance, desired_state=desired_state, created_at=now, updated_at=now
    )
    fakes.instances.put(instance, config.model_dump_json().encode())


@pytest.fixture(autouse=True)
def acme_runs(fakes: Fakes) -> None:
    """The relay asks a connector only about an instance configured to run."""
    configured(fakes)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_each_route_asks_its_query_and_answers_the_connectors_data(
    relay: httpx.AsyncClient, fakes: Fakes, case: Case
) -> None:
    fakes.queries.answers[case.query] = case.data
    answer = await signed_in_process(relay, case.method, case.path, case.body)
    assert answer.status_code == 200, answer.text
    assert fakes.queries.asked == [Asked("acme", case.query, case.payload, 10.0)]
    _, model = QUERIES[case.query]
    assert answer.json() == model.model_validate(case.data).model_dump(mode="json")
    for key, value in case.data.items():  # what the connector said comes back as it said it
        if not isinstance(value, list):
            assert answer.json()[key] == value


def test_every_query_has_a_route() -> None:
    assert {case.query for case in CASES} == set(QUERIES)


async def test_the_wait_is_the_query_timeout_setting(fakes: Fakes) -> None:
    fakes.queries.answers["groups_list"] = {"groups": []}
    async with relay_on(fakes, relay_settings(query_timeout=2.5)) as relay:
        answer = await signed_in_process(relay, "GET", f"{BASE}/groups")
    assert (answer.status_code, answer.json()) == (200, {"groups": []})
    assert [asked.seconds for asked in fakes.queries.asked] == [2.5]


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "fields"),
    [
        ("POST", "contacts/check", {"phones": []}, "invalid_body", {"phones"}),
        ("POST", "contacts/check", {"phones": ["call me"]}, "invalid_body", {"phones"}),
        ("POST", "contacts/check", {"phones": ["5511999999999"] * 51}, "invalid_body",
         {"phones"}),
        ("POST", "contacts/check", {"numbers": ["5511999999999"]}, "invalid_body",
         {"phones", "numbers"}),
        ("POST", "contacts/check", ["5511999999999"], "invalid_body", {"body"}),
        ("GET", "contacts/nobody", None, "invalid_path", {"jid"}),
        ("GET", "contacts/someone@example.com/lid", None, "invalid_path", {"jid"}),
        ("POST", "contacts/check/block", None, "invalid_path", {"jid"}),
        ("GET", f"groups/{PHONE_JID}", None, "invalid_path", {"group"}),
        ("DELETE", "groups/12ab@g.us", None, "invalid_path", {"group"}),
        ("GET", "groups/join/invite", None, "invalid_path", {"group"}),
        ("POST", "groups", {"name": "", "participants": ["5511999999999"]}, "invalid_body",
         {"name"}),
        ("POST", "groups", {"name": "Team"}, "invalid_body", {"participants"}),
        ("POST", "groups", {"name": "Team", "participants": ["nobody"]}, "invalid_body",
         {"participants.0"}),
        ("POST", f"groups/{GROUP}/participants",
         {"action": "kick", "participants": ["5511999999999"]}, "invalid_body", {"action"}),
        ("POST", f"groups/{GROUP}/participants",
         {"group": GROUP, "action": "add", "participants": ["5511999999999"]},
         "invalid_body", {"group"}),
        ("POST", f"groups/{PHONE_JID}/participants", {"action": "kick"}, "invalid_path",
         {"group"}),
        ("POST", "groups/join", {"link": "https://example.com/AbCdEfGhIj0123"}, "invalid_body",
         {"link"}),
        ("PATCH", f"groups/{GROUP}", {}, "invalid_body", {"body"}),
        ("PATCH", f"groups/{GROUP}", {"name": None}, "invalid_body", {"body"}),
        ("PATCH", f"groups/{GROUP}", {"name": "x" * 101}, "invalid_body", {"name"}),
        ("PATCH", f"groups/{GROUP}", {"locked": "yes please"}, "invalid_body", {"locked"}),
    ],
)  # fmt: skip
async def test_invalid_requests_are_422_naming_the_field_and_ask_nothing(
    relay: httpx.AsyncClient,
    fakes: Fakes,
    method: str,
    path: str,
    body: Any,
    code: str,
    fields: set[str],
) -> None:
    answer = await signed_in_process(relay, method, f"{BASE}/{path}", body)
    refused(answer, 422, code)
    assert {error["field"] for error in answer.json()["errors"]} == fields
    for field in fields - {"body"}:
        assert field in answer.json()["detail"]
    assert fakes.queries.asked == []


async def test_a_body_that_is_not_json_is_422_and_asks_nothing(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    answer = await signed_in_process(relay, "POST", f"{BASE}/groups/join", body=b"{link")
    refused(answer, 422, "invalid_json")
    assert fakes.queries.asked == []


@pytest.mark.parametrize(("code", "status"), sorted(QUERY_ERRORS.items()))
async def test_each_refusal_code_is_answered_with_its_status(
    relay: httpx.AsyncClient, fakes: Fakes, code: str, status: int
) -> None:
    fakes.queries.answers["group_info"] = QueryAnswer(ok=False, code=code, reason=f"why: {code}")
    answer = await signed_in_process(relay, "GET", f"{BASE}/groups/{GROUP}")
    refused(answer, status, code)
    assert answer.json()["detail"] == f"why: {code}"


async def test_a_refusal_code_the_contract_does_not_list_is_502_with_that_code(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.queries.answers["contacts_check"] = QueryAnswer(ok=False, code="rate_overlimit")
    answer = await signed_in_process(
        relay, "POST", f"{BASE}/contacts/check", {"phones": ["5511999999999"]}
    )
    refused(answer, 502, "rate_overlimit")
    assert "rate_overlimit" in answer.json()["detail"]


@pytest.mark.parametrize(
    "refusal",
    [
        QueryAnswer(ok=False, reason="something broke"),
        QueryAnswer(ok=False, code="Not A Code!", reason="something broke"),
    ],
)
async def test_a_refusal_without_a_readable_code_is_502_connector_error(
    relay: httpx.AsyncClient, fakes: Fakes, refusal: QueryAnswer
) -> None:
    fakes.queries.answers["groups_list"] = refusal
    answer = await signed_in_process(relay, "GET", f"{BASE}/groups")
    refused(answer, 502, "connector_error")
    assert "something broke" in answer.json()["detail"]


async def test_no_responders_is_504_connector_unavailable(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    configured(fakes)  # and no answer in the table: no connector runs it
    answer = await signed_in_process(relay, "GET", f"{BASE}/groups/{GROUP}")
    refused(answer, 504, "connector_unavailable")
    assert "no connector runs instance 'acme'" in answer.json()["detail"]
    assert [asked.name for asked in fakes.queries.asked] == ["group_info"]


async def test_no_responders_for_a_stopped_instance_is_409_and_for_none_404(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    configured(fakes, desired_state="stopped")
    stopped = await signed_in_process(relay, "GET", f"{BASE}/groups")
    refused(stopped, 409, "instance_not_open")
    assert "stopped" in stopped.json()["detail"]
    unknown = await signed_in_process(relay, "GET", "/v1/instances/ghost/groups")
    refused(unknown, 404, "unknown_instance")
    assert fakes.queries.asked == []  # neither is asked of a connector


async def test_no_answer_in_time_is_504_connector_timeout(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.queries.answers["group_create"] = QueryTimeout("wa.req.acme.group_create")
    answer = await signed_in_process(
        relay, "POST", f"{BASE}/groups", {"name": "Team", "participants": ["5511999999999"]}
    )
    refused(answer, 504, "connector_timeout")
    assert "within 10 s" in answer.json()["detail"]


@pytest.mark.parametrize(
    "answer",
    [
        UnreadableAnswer("ok: Field required"),
        {"groups": "not a list"},
        {"groups": [], "pages": 3},
        QueryAnswer(ok=True),  # no data, where the answer has a required field
    ],
    ids=["not-a-query-answer", "wrong-type", "unknown-field", "no-data"],
)
async def test_an_unreadable_answer_is_502_connector_error(
    relay: httpx.AsyncClient, fakes: Fakes, answer: Any
) -> None:
    fakes.queries.answers["groups_list"] = answer
    refused(await signed_in_process(relay, "GET", f"{BASE}/groups"), 502, "connector_error")


async def test_a_done_answer_may_come_without_data(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    fakes.queries.answers["group_leave"] = QueryAnswer(ok=True)
    answer = await signed_in_process(relay, "DELETE", f"{BASE}/groups/{GROUP}")
    assert (answer.status_code, answer.json()) == (200, DONE)


async def test_the_bus_failing_is_503_like_every_route(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.queries.answers["groups_list"] = NatsTimeoutError()
    answer = await signed_in_process(relay, "GET", f"{BASE}/groups")
    refused(answer, 503, "bus_unavailable")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_a_scoped_key_asks_only_about_its_own_instances(
    relay: httpx.AsyncClient, fakes: Fakes, case: Case
) -> None:
    fakes.queries.answers[case.query] = case.data
    as_tenant: dict[str, Any] = {"key_id": TENANT, "secret": TENANT_SECRET}
    other = case.path.replace(BASE, "/v1/instances/other")
    refused(
        await signed_in_process(relay, case.method, other, case.body, **as_tenant),
        403,
        "instance_forbidden",
    )
    assert fakes.queries.asked == []
    own = await signed_in_process(relay, case.method, case.path, case.body, **as_tenant)
    assert own.status_code == 200, own.text
    assert [asked.instance for asked in fakes.queries.asked] == ["acme"]


def test_each_query_route_documents_its_models_and_failures() -> None:
    document = openapi_document(ENDPOINTS, "test")
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    for case in CASES:
        path = case.path.replace(BASE, "/v1/instances/{instance}")
        path = path.replace(GROUP, "{group}").replace(PHONE_JID, "{jid}").replace(LID, "{jid}")
        path = path.replace("%2B55%2011%2099999-9999", "{jid}").replace("5511999999999", "{jid}")
        operation = operations[(case.method, path)]
        _, model = QUERIES[case.query]
        responses = operation["responses"]
        ok = responses["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ok.endswith("/" + model.__name__), (path, ok)
        assert {"403", "404", "409", "422", "502", "504"} <= set(responses), path
        assert "connector_unavailable" in responses["504"]["description"]
        assert ("requestBody" in operation) == (case.body is not None), path
    participants = operations[("POST", "/v1/instances/{instance}/groups/{group}/participants")]
    body = participants["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert set(schema["properties"]) == {"action", "participants"}  # the group is the path's
