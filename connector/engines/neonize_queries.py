"""Queries (`schemas.queries`) answered through neonize: each query is a few calls of neonize's
async client, and the answer is mapped from what those calls return (neonize's protobufs).

The mappings are pure functions, tested on real neonize protobufs; `answer_query` is the one
coroutine the session calls. neonize hands whatsmeow's errors over as text alone (an exception
carrying the Go error string), so `query_error` classifies them by whatsmeow's own error values
(`errors.go`): the wrapped ones a group call returns (`ErrGroupNotFound`, `ErrNotInGroup`,
`ErrGroupInviteLinkUnauthorized`, `ErrInviteLinkInvalid`, `ErrInviteLinkRevoked`) and the
`IQError` text (`info query returned status <code>: <text>`) of the ones it passes on unwrapped.
What a group call's status means is whatsmeow's reading too: 401 not-authorized is not being an
admin, 403 forbidden not being in the group, 404 item-not-found no such group. Anything else is
`engine_error` with the text as it came.

What lives only in the session's store (a contact's other address) is read from the store and
never asked of WhatsApp: `lid_resolve` says `known: false` when the store has not learnt it.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from connector.engine import QueryError
from connector.engines.neonize_lib import BlocklistAction, NeonizeError, ParticipantChange
from connector.engines.neonize_mapping import from_unix, jid_str
from connector.engines.neonize_outbound import to_jid
from schemas.commands import USER_SERVER, jid_string, non_device_jid, normalise_recipient
from schemas.envelope import ContractModel
from schemas.queries import (
    QUERIES,
    BlockContact,
    ChangeParticipants,
    CheckNumbers,
    ContactProfile,
    ContactQuery,
    CreateGroup,
    Done,
    GroupInfo,
    GroupInvite,
    GroupParticipant,
    GroupQuery,
    Groups,
    GroupSettings,
    InviteLink,
    Joined,
    JoinGroup,
    LidMapping,
    ListGroups,
    NumberCheck,
    NumbersChecked,
    ParticipantResult,
    ParticipantsChanged,
    SubscribePresence,
)

# neonize_lib has loaded neonize (quietly) above; its enums module is only looked up here.
LID_SERVER = "lid"
PERSON_SERVERS = frozenset({USER_SERVER, LID_SERVER})
PARTICIPANT_OK = frozenset({0, 200})
"""whatsmeow's per-participant `Error`: 0 when WhatsApp gave none, which is its 200."""

NOTHING_RETURNED = "function returned nothing."
"""neonize's error when WhatsApp answered a number check with no user at all."""

PICTURE_WITHHELD = (
    "that user or group does not have a profile picture",  # ErrProfilePictureNotSet (404)
    "the user has hidden their profile picture from you",  # ErrProfilePictureUnauthorized (401)
)
"""Profile picture errors that only mean there is no picture to show."""

GROUP_ERRORS: tuple[tuple[str, str], ...] = (
    ("that group does not exist", "unknown_group"),  # ErrGroupNotFound (404)
    ("you're not participating in that group", "unknown_group"),  # ErrNotInGroup (403)
    # ErrGroupInviteLinkUnauthorized (401)
    ("you don't have the permission to get the group's invite link", "not_group_admin"),
    ("info query returned status 401: not-authorized", "not_group_admin"),  # ErrIQNotAuthorized
    ("info query returned status 403: forbidden", "unknown_group"),  # ErrIQForbidden
    ("info query returned status 404: item-not-found", "unknown_group"),  # ErrIQNotFound
)
"""Error texts of calls about one existing group, by whatsmeow's error values."""

INVITE_ERRORS: tuple[tuple[str, str], ...] = (
    ("that group invite link has been revoked", "invalid_invite"),  # ErrInviteLinkRevoked (410)
    ("that group invite link is not valid", "invalid_invite"),  # ErrInviteLinkInvalid (406)
    ("info query returned status 404: item-not-found", "invalid_invite"),  # no such code
)
"""Error texts of joining by an invite link."""

ON_A_GROUP = frozenset(
    {"group_info", "group_leave", "group_participants", "group_invite", "group_settings"}
)
"""Queries about one existing group: their errors read with `GROUP_ERRORS`."""


def error_text(error: Exception) -> str:
    """The Go error text of a neonize exception (`GetProfilePictureError` carries the whole
    return protobuf instead of its `Error`)."""
    argument = error.args[0] if error.args else ""
    if hasattr(argument, "Error"):
        return str(argument.Error)
    return str(argument)


def query_error(name: str, text: str) -> QueryError:
    """The `QueryError` for the error text a neonize call of query `name` failed with."""
    lowered = text.lower()
    table = INVITE_ERRORS if name == "group_join" else GROUP_ERRORS if name in ON_A_GROUP else ()
    for mark, code in table:
        if mark in lowered:
            return QueryError(code, text)
    return QueryError("engine_error", text or "neonize failed without saying why")


# -- addresses ------------------------------------------------------------------------------


def person_jid(recipient: str) -> str:
    """A person's address (`…@s.whatsapp.net` or `…@lid`, no device part) of a recipient (a
    phone number or a JID); other JIDs (groups, channels) are not people."""
    try:
        jid = non_device_jid(jid_string(normalise_recipient(recipient)))
    except ValueError as error:
        raise QueryError("invalid_query", str(error)) from error
    if jid.rpartition("@")[2] not in PERSON_SERVERS:
        raise QueryError("invalid_query", f"{recipient} is not a person's address")
    return jid


def is_lid(jid: str) -> bool:
    return jid.endswith(f"@{LID_SERVER}")


def known_jid(jid: Any) -> str | None:
    """`jid_str` of a neonize `JID` answered from the store; None for the empty JID it answers
    when it does not know."""
    return jid_str(jid) if jid.User else None


def lid_mapping(jid: str, other: str | None) -> LidMapping:
    """A contact's two addresses: `jid` as asked and `other`, its other one when known."""
    lid, phone = (jid, other) if is_lid(jid) else (other, jid)
    return LidMapping(jid=jid, phone_jid=phone, lid=lid, known=other is not None)


# -- contacts -------------------------------------------------------------------------------


def number_queries(request: CheckNumbers) -> list[str]:
    """`is_on_whatsapp`'s arguments: whatsmeow wants international numbers with their `+`."""
    return [f"+{phone}" for phone in request.phones]


def numbers_checked(
    request: CheckNumbers, responses: Iterable[Any], phone_of: dict[str, str] | None = None
) -> NumbersChecked:
    """`is_on_whatsapp`'s answers (neonize `IsOnWhatsAppResponse`s, matched to the numbers by
    their `Query`) for every number asked, in order. An account's JID is its phone-number JID:
    whatsmeow may answer a LID instead, which `phone_of` (LID → phone JID, from the store)
    turns back into one when known."""
    phone_of = phone_of or {}
    by_number = {str(response.Query).lstrip("+"): response for response in responses}
    checks = []
    for phone in request.phones:
        response = by_number.get(phone)
        on_whatsapp = response is not None and bool(response.IsIn)
        jid = known_jid(response.JID) if response is not None and on_whatsapp else None
        if jid is not None and is_lid(jid):
            jid = phone_of.get(jid, jid)
        checks.append(NumberCheck(phone=phone, on_whatsapp=on_whatsapp, jid=jid))
    return NumbersChecked(numbers=checks)


def answered_lids(responses: Iterable[Any]) -> list[Any]:
    """The neonize `JID`s of number checks WhatsApp answered with a LID."""
    return [
        response.JID
        for response in responses
        if response.IsIn and str(response.JID.Server) == LID_SERVER and response.JID.User
    ]


def business_name(verified: Any) -> str | None:
    """A verified business name, from a neonize `VerifiedName` (None when there is none)."""
    return str(verified.Details.verifiedName) or None


def picture_url(picture: Any) -> str | None:
    """The URL of a neonize `ProfilePictureInfo`; None when neonize answered none."""
    if picture is None:
        return None
    return str(picture.URL) or None


def user_info_of(jid: str, users: Iterable[Any]) -> Any:
    """The neonize `UserInfo` of `jid` among `get_user_info`'s answers, None when WhatsApp gave
    none."""
    for user in users:
        if user.HasField("JID") and jid_str(user.JID) == jid and user.HasField("UserInfo"):
            return user.UserInfo
    return None


def contact_profile(
    jid: str,
    *,
    phone_jid: str | None,
    lid: str | None,
    info: Any,
    verified: Any = None,
    picture: str | None = None,
) -> ContactProfile:
    """A profile from a neonize `UserInfo` (about text, verified business name) and what was
    found beside it: its two addresses, the number check's `VerifiedName`, the picture URL."""
    verified_name = (
        info.VerifiedName if info is not None and info.HasField("VerifiedName") else None
    )
    verified_name = verified_name if verified_name is not None else verified
    name = business_name(verified_name) if verified_name is not None else None
    return ContactProfile(
        jid=jid,
        phone_jid=phone_jid,
        lid=lid,
        name=name,
        about=(str(info.Status) or None) if info is not None else None,
        picture_url=picture,
        business=verified_name is not None,
    )


# -- groups ---------------------------------------------------------------------------------


def _seconds(value: float) -> datetime | None:
    return from_unix(int(value)) if value > 0 else None


def participant(member: Any) -> GroupParticipant:
    """A neonize `GroupParticipant` (whatsmeow's `JID` is its LID or its phone JID)."""
    address = member.JID if member.HasField("JID") and member.JID.User else member.PhoneNumber
    return GroupParticipant(
        jid=jid_str(address),
        phone_jid=known_jid(member.PhoneNumber),
        admin=bool(member.IsAdmin),
        super_admin=bool(member.IsSuperAdmin),
    )


def group_info(info: Any) -> GroupInfo:
    """A neonize `GroupInfo`. People WhatsApp would not add when the group was created (a
    per-participant error) are not in it. whatsmeow's creation time crosses neonize as a 32-bit
    float, so it is off by up to two minutes."""
    return GroupInfo(
        jid=jid_str(info.JID),
        name=str(info.GroupName.Name),
        description=str(info.GroupTopic.Topic) or None,
        owner=known_jid(info.OwnerJID),
        created_at=_seconds(float(info.GroupCreated)),
        announce=bool(info.GroupAnnounce.IsAnnounce),
        locked=bool(info.GroupLocked.isLocked),
        participants=[
            participant(member)
            for member in info.Participants
            if int(member.Error) in PARTICIPANT_OK
        ],
    )


def participant_changes(request: ChangeParticipants) -> list[str]:
    """The people of a participants change, as person addresses."""
    return [person_jid(member) for member in request.participants]


def participants_changed(asked: list[str], answered: Iterable[Any]) -> ParticipantsChanged:
    """WhatsApp's per-participant answer (neonize `GroupParticipant`s, whose `Error` is
    WhatsApp's code for that person; 0 or 200 is done) for every person asked, in order and
    under the address asked (matched by the JID, phone JID or LID WhatsApp answered with). A
    person WhatsApp said nothing about is not done, with no code."""
    by_address: dict[str, Any] = {}
    for member in answered:
        for field in ("JID", "PhoneNumber", "LID"):
            if member.HasField(field) and getattr(member, field).User:
                by_address.setdefault(jid_str(getattr(member, field)), member)
    results = []
    for jid in asked:
        member = by_address.get(jid)
        if member is None:
            results.append(ParticipantResult(jid=jid, ok=False))
            continue
        code = int(member.Error)
        ok = code in PARTICIPANT_OK
        results.append(ParticipantResult(jid=jid, ok=ok, error=None if ok else str(code)))
    return ParticipantsChanged(results=results)


def settings_calls(request: GroupSettings) -> list[tuple[str, tuple[Any, ...]]]:
    """The neonize calls (method name, arguments after the group's JID) of a settings change,
    one per setting given, in the order name, description, announce, locked. A description is
    set with no previous or new topic id: whatsmeow then looks the previous one up itself and
    makes a new one; an empty description deletes it."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    if request.name is not None:
        calls.append(("set_group_name", (request.name,)))
    if request.description is not None:
        calls.append(("set_group_topic", ("", "", request.description)))
    if request.announce is not None:
        calls.append(("set_group_announce", (request.announce,)))
    if request.locked is not None:
        calls.append(("set_group_locked", (request.locked,)))
    if request.photo_base64 is not None:
        calls.append(("set_group_photo", (base64.b64decode(request.photo_base64),)))
    return calls


# -- the calls ------------------------------------------------------------------------------


async def _check(client: Any, *numbers: str) -> list[Any]:
    """`is_on_whatsapp`, with neonize's error for an answer naming nobody read as that."""
    try:
        return list(await client.is_on_whatsapp(*numbers))
    except NeonizeError as error:
        if error_text(error).strip().lower() == NOTHING_RETURNED:
            return []
        raise


async def _stored_other(client: Any, jid: str) -> str | None:
    """The other address of `jid` as the session's store knows it (never asks WhatsApp)."""
    if is_lid(jid):
        return known_jid(await client.get_pn_from_lid(to_jid(jid)))
    return known_jid(await client.get_lid_from_pn(to_jid(jid)))


async def _contacts_check(client: Any, request: CheckNumbers) -> ContractModel:
    responses = await _check(client, *number_queries(request))
    phone_of: dict[str, str] = {}
    for lid in answered_lids(responses):
        try:
            phone = known_jid(await client.get_pn_from_lid(lid))
        except NeonizeError:  # the LID is an answer all the same
            phone = None
        if phone is not None:
            phone_of[jid_str(lid)] = phone
    return numbers_checked(request, responses, phone_of)


async def _contact_profile(client: Any, request: ContactQuery) -> ContractModel:
    asked = person_jid(request.jid)
    jid, verified = asked, None
    if not is_lid(asked):  # a number may not be on WhatsApp, or be known under another JID
        hits = [r for r in await _check(client, f"+{asked.partition('@')[0]}") if r.IsIn]
        if not hits:
            raise QueryError("not_on_whatsapp", f"{asked} is not on WhatsApp")
        jid = known_jid(hits[0].JID) or asked
        verified = hits[0].VerifiedName if hits[0].HasField("VerifiedName") else None
    info = user_info_of(jid, await client.get_user_info(to_jid(jid)))
    if info is None and is_lid(asked):  # a number was checked above; a LID is only here
        raise QueryError("not_on_whatsapp", f"WhatsApp knows no {jid}")
    other = await _stored_other(client, jid)
    lid: str | None
    phone_jid: str | None
    if is_lid(jid):
        lid, phone_jid = jid, other or (None if is_lid(asked) else asked)
    else:
        lid, phone_jid = other, jid
    try:
        picture = picture_url(await client.get_profile_picture(to_jid(jid)))
    except NeonizeError as error:
        if not any(mark in error_text(error).lower() for mark in PICTURE_WITHHELD):
            raise
        picture = None
    return contact_profile(
        asked, phone_jid=phone_jid, lid=lid, info=info, verified=verified, picture=picture
    )


async def _lid_resolve(client: Any, request: ContactQuery) -> ContractModel:
    jid = person_jid(request.jid)
    return lid_mapping(jid, await _stored_other(client, jid))


async def _contact_block(client: Any, request: BlockContact) -> ContractModel:
    action = BlocklistAction.BLOCK if request.block else BlocklistAction.UNBLOCK
    await client.update_blocklist(to_jid(person_jid(request.jid)), action)
    return Done()


async def _presence_subscribe(client: Any, request: SubscribePresence) -> ContractModel:
    await client.subscribe_presence(to_jid(person_jid(request.jid)))
    return Done()


async def _groups_list(client: Any, request: ListGroups) -> ContractModel:
    return Groups(groups=[group_info(info) for info in await client.get_joined_groups()])


async def _group_create(client: Any, request: CreateGroup) -> ContractModel:
    people = [to_jid(person_jid(member)) for member in request.participants]
    return group_info(await client.create_group(request.name, participants=people))


async def _group_info(client: Any, request: GroupQuery) -> ContractModel:
    return group_info(await client.get_group_info(to_jid(request.group)))


async def _group_leave(client: Any, request: GroupQuery) -> ContractModel:
    await client.leave_group(to_jid(request.group))
    return Done()


async def _group_participants(client: Any, request: ChangeParticipants) -> ContractModel:
    asked = participant_changes(request)
    answered = await client.update_group_participants(
        to_jid(request.group), [to_jid(jid) for jid in asked], ParticipantChange(request.action)
    )
    return participants_changed(asked, answered)


async def _group_invite(client: Any, request: GroupInvite) -> ContractModel:
    link = await client.get_group_invite_link(to_jid(request.group), revoke=request.revoke)
    return InviteLink(link=str(link))


async def _group_join(client: Any, request: JoinGroup) -> ContractModel:
    return Joined(group=jid_str(await client.join_group_with_link(request.link)))


async def _group_settings(client: Any, request: GroupSettings) -> ContractModel:
    group = to_jid(request.group)
    for method, arguments in settings_calls(request):
        await getattr(client, method)(group, *arguments)
    return Done()


Handler = Callable[[Any, Any], Awaitable[ContractModel]]

HANDLERS: dict[str, Handler] = {
    "contacts_check": _contacts_check,
    "contact_profile": _contact_profile,
    "lid_resolve": _lid_resolve,
    "contact_block": _contact_block,
    "presence_subscribe": _presence_subscribe,
    "groups_list": _groups_list,
    "group_create": _group_create,
    "group_info": _group_info,
    "group_leave": _group_leave,
    "group_participants": _group_participants,
    "group_invite": _group_invite,
    "group_join": _group_join,
    "group_settings": _group_settings,
}
"""Every query of `schemas.queries.QUERIES`, answered through a neonize client."""


async def answer_query(client: Any, name: str, request: ContractModel) -> ContractModel:
    """Answer query `name` with a logged-in neonize client; raises `QueryError`."""
    handler = HANDLERS.get(name)
    if handler is None or name not in QUERIES:
        raise QueryError("unknown_query", f"the neonize engine has no query {name!r}")
    expected = QUERIES[name][0]
    if not isinstance(request, expected):
        raise QueryError(
            "invalid_query", f"{name} takes a {expected.__name__}, not {type(request).__name__}"
        )
    try:
        return await handler(client, request)
    except NeonizeError as error:
        raise query_error(name, error_text(error)) from error
