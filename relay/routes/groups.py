"""Groups, asked of the connector running the instance (`schemas.queries`): list, create, show,
leave, change participants and settings, invite links, join by link."""

from __future__ import annotations

from starlette.responses import Response

from relay.endpoints import Call, Endpoint
from relay.problems import field_error, field_problem
from relay.routes.queries import (
    NonEmpty,
    answer_query,
    body_model,
    query_replies,
    query_request,
)
from schemas.queries import (
    ChangeParticipants,
    CreateGroup,
    Done,
    GroupInfo,
    GroupInvite,
    GroupQuery,
    Groups,
    GroupSettings,
    InviteLink,
    Joined,
    JoinGroup,
    ListGroups,
    ParticipantsChanged,
)

_GROUP = ("group",)
_SETTINGS = ("name", "description", "announce", "locked")
ParticipantsBody = body_model(ChangeParticipants, *_GROUP)
SettingsBody = body_model(GroupSettings, *_GROUP, base=NonEmpty)


async def list_groups(call: Call) -> Response:
    return await answer_query(call, "groups_list", ListGroups())


async def create_group(call: Call) -> Response:
    return await answer_query(call, "group_create", query_request(call, CreateGroup, body=True))


async def group_info(call: Call) -> Response:
    return await answer_query(call, "group_info", query_request(call, GroupQuery, path=_GROUP))


async def leave_group(call: Call) -> Response:
    return await answer_query(call, "group_leave", query_request(call, GroupQuery, path=_GROUP))


async def change_participants(call: Call) -> Response:
    request = query_request(call, ChangeParticipants, path=_GROUP, body=True)
    return await answer_query(call, "group_participants", request)


async def invite_link(call: Call) -> Response:
    request = query_request(call, GroupInvite, path=_GROUP, fixed={"revoke": False})
    return await answer_query(call, "group_invite", request)


async def revoke_invite(call: Call) -> Response:
    request = query_request(call, GroupInvite, path=_GROUP, fixed={"revoke": True})
    return await answer_query(call, "group_invite", request)


async def join_group(call: Call) -> Response:
    return await answer_query(call, "group_join", query_request(call, JoinGroup, body=True))


async def update_group(call: Call) -> Response:
    request = query_request(call, GroupSettings, path=_GROUP, body=True)
    if all(getattr(request, name) is None for name in _SETTINGS):
        rule = "give at least one of " + ", ".join(_SETTINGS)
        raise field_problem("invalid_body", [field_error((), rule, "missing")])
    return await answer_query(call, "group_settings", request)


_GROUPS = "/v1/instances/{instance}/groups"
_ONE = _GROUPS + "/{group}"
_UNKNOWN = {404: "`unknown_group`: the account is not in this group, or it does not exist"}
_ADMIN = _UNKNOWN | {403: "`not_group_admin`: only the group's admins may do this"}
_GROUP_NOTE = "`{group}` is the group's JID, `<digits>@g.us`."

TAG = "groups"
endpoints = [
    Endpoint(
        "GET", _GROUPS, list_groups, "listGroups", "The groups the account is in", TAG,
        query_replies("Every group, with its participants.", Groups),
    ),
    Endpoint(
        "POST", _GROUPS, create_group, "createGroup", "Create a group", TAG,
        query_replies("The new group.", GroupInfo,
                      {404: "`not_on_whatsapp`: a participant has no WhatsApp account"}),
        body=CreateGroup,
    ),
    Endpoint(  # before `{group}`: `join` is no group JID
        "POST", _GROUPS + "/join", join_group, "joinGroup", "Join a group by invite link", TAG,
        query_replies("Joined: the group's JID.", Joined,
                      {404: "`invalid_invite`: the link is revoked, or no link"}),
        body=JoinGroup,
    ),
    Endpoint(
        "GET", _ONE, group_info, "getGroup", "A group: name, settings, participants", TAG,
        query_replies("The group.", GroupInfo, _UNKNOWN), description=_GROUP_NOTE,
    ),
    Endpoint(
        "PATCH", _ONE, update_group, "updateGroup",
        "Change a group's name, description or settings (what is left out stays)", TAG,
        query_replies("Changed.", Done, _ADMIN), body=SettingsBody, description=_GROUP_NOTE,
    ),
    Endpoint(
        "DELETE", _ONE, leave_group, "leaveGroup", "Leave a group", TAG,
        query_replies("Left.", Done, _UNKNOWN), description=_GROUP_NOTE,
    ),
    Endpoint(
        "POST", _ONE + "/participants", change_participants, "changeParticipants",
        "Add, remove, promote or demote participants", TAG,
        query_replies("Each participant's result.", ParticipantsChanged, _ADMIN),
        body=ParticipantsBody,
        description=_GROUP_NOTE + " A participant WhatsApp refused has `ok: false` and the "
        "reason's code; the others are done.",
    ),
    Endpoint(
        "GET", _ONE + "/invite", invite_link, "getGroupInvite", "The group's invite link", TAG,
        query_replies("The link.", InviteLink, _ADMIN), description=_GROUP_NOTE,
    ),
    Endpoint(
        "POST", _ONE + "/invite/revoke", revoke_invite, "revokeGroupInvite",
        "Make a new invite link (the old one stops working)", TAG,
        query_replies("The new link.", InviteLink, _ADMIN), description=_GROUP_NOTE,
    ),
]  # fmt: skip
