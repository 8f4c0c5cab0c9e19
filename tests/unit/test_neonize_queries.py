"""Queries through neonize: which neonize calls each query makes (checked against the real
client's signatures), how neonize's answers (real protobufs, parsed back as from Go) become
answers, and how whatsmeow's error texts become query error codes."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from connector.engine import QueryError
from connector.engines.neonize_lib import (
    BlocklistAction,
    NeonizeError,
    NewAClient,
    ParticipantChange,
    nz,
)
from connector.engines.neonize_queries import (
    HANDLERS,
    answer_query,
    contact_profile,
    group_info,
    lid_mapping,
    number_queries,
    numbers_checked,
    participants_changed,
    person_jid,
    picture_url,
    query_error,
    settings_calls,
)
from schemas.envelope import ContractModel
from schemas.queries import (
    QUERIES,
    QUERY_ERRORS,
    BlockContact,
    ChangeParticipants,
    CheckNumbers,
    ContactProfile,
    ContactQuery,
    CreateGroup,
    Done,
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
from tests.neonize_protos import PEER, SENT_AT, from_go, jid

exc = importlib.import_module("neonize.exc")  # loaded quietly by neonize_lib above

GROUP = "120363000000000001@g.us"
PHONE_JID = f"{PEER}@s.whatsapp.net"
LID = "77665544332211"
LID_JID = f"{LID}@lid"
MEMBER = "1555000111"
MEMBER_JID = f"{MEMBER}@s.whatsapp.net"
GO_ZERO_TIME = -62135596800
INVITE = "https://chat.whatsapp.com/AbCdEfGhIjKlMnOpQrSt12"


def empty_jid() -> Any:
    return jid("", "")


# -- neonize's answers, as the client returns them -------------------------------------------


def returned(answer: Any, field: str) -> Any:
    """What a neonize client method returns: a field of the return protobuf parsed from Go."""
    return getattr(from_go(answer), field)


def on_whatsapp(query: str, answer_jid: Any, *, is_in: bool = True, business: str = "") -> Any:
    response = nz.IsOnWhatsAppResponse(Query=query, JID=answer_jid, IsIn=is_in)
    if business:
        response.VerifiedName.Details.verifiedName = business
    return response


def checked(*responses: Any) -> Any:
    return returned(
        nz.IsOnWhatsAppReturnFunction(IsOnWhatsAppResponse=list(responses)), "IsOnWhatsAppResponse"
    )


def member(
    address: Any,
    *,
    phone: Any = None,
    lid: Any = None,
    admin: bool = False,
    super_admin: bool = False,
    error: int = 0,
) -> Any:
    """A neonize `GroupParticipant` as `EncodeGroupParticipant` fills it."""
    return nz.GroupParticipant(
        JID=address,
        LID=lid if lid is not None else (address if address.Server == "lid" else empty_jid()),
        PhoneNumber=phone
        if phone is not None
        else (address if address.Server != "lid" else empty_jid()),
        IsAdmin=admin or super_admin,
        IsSuperAdmin=super_admin,
        DisplayName="",
        Error=error,
    )


def info_proto(
    *,
    name: str = "Team",
    topic: str = "",
    announce: bool = False,
    locked: bool = False,
    created: int = int(SENT_AT.timestamp()),
    owner: Any = None,
    members: list[Any] | None = None,
) -> Any:
    """A neonize `GroupInfo` as `EncodeGroupInfo` fills it."""
    return nz.GroupInfo(
        OwnerJID=owner if owner is not None else jid(PEER),
        JID=jid("120363000000000001", "g.us"),
        OwnerPN=owner if owner is not None else jid(PEER),
        GroupName=nz.GroupName(Name=name, NameSetAt=created, NameSetBy=jid(PEER)),
        GroupTopic=nz.GroupTopic(
            Topic=topic,
            TopicID="3EB0TOPIC" if topic else "",
            TopicSetAt=created if topic else GO_ZERO_TIME,
            TopicSetBy=jid(PEER) if topic else empty_jid(),
            TopicDeleted=False,
        ),
        GroupLocked=nz.GroupLocked(isLocked=locked),
        GroupAnnounce=nz.GroupAnnounce(IsAnnounce=announce, AnnounceVersionID=""),
        GroupEphemeral=nz.GroupEphemeral(IsEphemeral=False, DisappearingTimer=0),
        GroupIncognito=nz.GroupIncognito(IsIncognito=False),
        GroupParent=nz.GroupParent(IsParent=False, DefaultMembershipApprovalMode=""),
        GroupLinkedParent=nz.GroupLinkedParent(LinkedParentJID=empty_jid()),
        GroupIsDefaultSub=nz.GroupIsDefaultSub(IsDefaultSubGroup=False),
        GroupCreated=float(created),
        ParticipantVersionID="",
        Participants=members or [],
    )


def one_group(info: Any) -> Any:
    return returned(nz.GetGroupInfoReturnFunction(GroupInfo=info), "GroupInfo")


def user(address: Any, *, status: str = "", business: str = "") -> Any:
    info = nz.UserInfo(Status=status, PictureID="", Devices=[address])
    if business:
        info.VerifiedName.Details.verifiedName = business
    return nz.GetUserInfoSingleReturnFunction(JID=address, UserInfo=info)


def users(*found: Any) -> Any:
    return returned(nz.GetUserInfoReturnFunction(UsersInfo=list(found)), "UsersInfo")


def stored(address: Any) -> Any:
    return returned(nz.GetJIDFromStoreReturnFunction(Jid=address), "Jid")


def picture(url: str) -> Any:
    return returned(
        nz.GetProfilePictureReturnFunction(
            Picture=nz.ProfilePictureInfo(URL=url, ID="1", Type="image", DirectPath="/p")
        ),
        "Picture",
    )


# -- a client whose network side is this test ------------------------------------------------


class FakeClient:
    """Answers neonize's client methods with what the test set (a value, an exception to raise,
    or a function of the arguments) and records every call. Only methods the real client has
    can be called."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if not callable(getattr(NewAClient, name, None)):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            answer = self.answers.get(name)
            if isinstance(answer, BaseException):
                raise answer
            if callable(answer):
                return answer(*args, **kwargs)
            return answer

        return call

    def plain_calls(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        return [(name, plain(args), plain(kwargs)) for name, args, kwargs in self.calls]


def plain(value: Any) -> Any:
    """Call arguments in words: a neonize `JID` as `user@server` (a device part would show)."""
    if isinstance(value, nz.JID):
        device = f":{value.Device}" if value.Device else ""
        return f"{value.User}{device}@{value.Server}"
    if isinstance(value, tuple):
        return tuple(plain(item) for item in value)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def answering() -> FakeClient:
    """A client every query succeeds with (minimal answers)."""
    return FakeClient(
        is_on_whatsapp=checked(on_whatsapp(f"+{PEER}", jid(PEER))),
        get_user_info=lambda *asked: users(*(user(address) for address in asked)),
        get_lid_from_pn=stored(empty_jid()),
        get_pn_from_lid=stored(empty_jid()),
        get_profile_picture=None,
        update_blocklist=returned(
            nz.GetBlocklistReturnFunction(Blocklist=nz.Blocklist(DHash="x", JIDs=[])), "Blocklist"
        ),
        get_joined_groups=returned(nz.GetJoinedGroupsReturnFunction(Group=[info_proto()]), "Group"),
        create_group=one_group(info_proto()),
        get_group_info=one_group(info_proto()),
        update_group_participants=[],
        get_group_invite_link=returned(
            nz.GetGroupInviteLinkReturnFunction(InviteLink=INVITE), "InviteLink"
        ),
        join_group_with_link=returned(
            nz.JoinGroupWithLinkReturnFunction(Jid=jid("120363000000000001", "g.us")), "Jid"
        ),
    )


# -- every query, the calls it makes -------------------------------------------------------

Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def participants_case(action: str) -> tuple[str, ContractModel, list[Call]]:
    request = ChangeParticipants(group=GROUP, action=action, participants=[MEMBER, LID_JID])
    call: Call = (
        "update_group_participants",
        (GROUP, [MEMBER_JID, LID_JID], ParticipantChange(action)),
        {},
    )
    return "group_participants", request, [call]


CALLS: list[tuple[str, ContractModel, list[Call]]] = [
    (
        "contacts_check",
        CheckNumbers(phones=["+49 151 12345678", "15550001111"]),
        [("is_on_whatsapp", ("+4915112345678", "+15550001111"), {})],
    ),
    (
        "contact_profile",
        ContactQuery(jid=f"+{PEER}"),
        [
            ("is_on_whatsapp", (f"+{PEER}",), {}),
            ("get_user_info", (PHONE_JID,), {}),
            ("get_lid_from_pn", (PHONE_JID,), {}),
            ("get_profile_picture", (PHONE_JID,), {}),
        ],
    ),
    (
        "contact_profile",
        ContactQuery(jid=f"{LID}:3@lid"),  # a LID needs no number check; no device part
        [
            ("get_user_info", (LID_JID,), {}),
            ("get_pn_from_lid", (LID_JID,), {}),
            ("get_profile_picture", (LID_JID,), {}),
        ],
    ),
    ("lid_resolve", ContactQuery(jid=PEER), [("get_lid_from_pn", (PHONE_JID,), {})]),
    ("lid_resolve", ContactQuery(jid=LID_JID), [("get_pn_from_lid", (LID_JID,), {})]),
    (
        "contact_block",
        BlockContact(jid=f"{PEER}:2@s.whatsapp.net"),
        [("update_blocklist", (PHONE_JID, BlocklistAction.BLOCK), {})],
    ),
    (
        "contact_block",
        BlockContact(jid=LID_JID, block=False),
        [("update_blocklist", (LID_JID, BlocklistAction.UNBLOCK), {})],
    ),
    (
        "presence_subscribe",
        SubscribePresence(jid=f"+{PEER}"),
        [("subscribe_presence", (PHONE_JID,), {})],
    ),
    ("groups_list", ListGroups(), [("get_joined_groups", (), {})]),
    (
        "group_create",
        CreateGroup(name="Team", participants=[MEMBER, LID_JID]),
        [("create_group", ("Team",), {"participants": [MEMBER_JID, LID_JID]})],
    ),
    ("group_info", GroupQuery(group=GROUP), [("get_group_info", (GROUP,), {})]),
    ("group_leave", GroupQuery(group=GROUP), [("leave_group", (GROUP,), {})]),
    *[participants_case(action) for action in ("add", "remove", "promote", "demote")],
    (
        "group_invite",
        GroupInvite(group=GROUP),
        [("get_group_invite_link", (GROUP,), {"revoke": False})],
    ),
    (
        "group_invite",
        GroupInvite(group=GROUP, revoke=True),
        [("get_group_invite_link", (GROUP,), {"revoke": True})],
    ),
    ("group_join", JoinGroup(link=INVITE), [("join_group_with_link", (INVITE,), {})]),
    (
        "group_settings",
        GroupSettings(group=GROUP, name="New", description="Rules", announce=True, locked=False),
        [
            ("set_group_name", (GROUP, "New"), {}),
            ("set_group_topic", (GROUP, "", "", "Rules"), {}),
            ("set_group_announce", (GROUP, True), {}),
            ("set_group_locked", (GROUP, False), {}),
        ],
    ),
    (
        "group_settings",
        GroupSettings(group=GROUP, description=""),  # deletes the description
        [("set_group_topic", (GROUP, "", "", ""), {})],
    ),
    ("group_settings", GroupSettings(group=GROUP), []),
]


@pytest.mark.parametrize(("name", "request_", "calls"), CALLS)
async def test_each_query_makes_these_neonize_calls(
    name: str, request_: ContractModel, calls: list[Any]
) -> None:
    client = answering()
    answer = await answer_query(client, name, request_)
    assert isinstance(answer, QUERIES[name][1])
    assert client.plain_calls() == calls
    for method, args, kwargs in client.calls:  # as the real client's methods take them
        inspect.signature(getattr(NewAClient, method)).bind(client, *args, **kwargs)
        assert all(arg.Device == 0 for arg in args if isinstance(arg, nz.JID))


def test_the_calls_cover_every_query() -> None:
    assert set(HANDLERS) == set(QUERIES)
    assert {name for name, _, _ in CALLS} == set(QUERIES)


def test_enum_arguments_are_neonizes_own() -> None:
    assert (BlocklistAction.BLOCK.value, BlocklistAction.UNBLOCK.value) == ("block", "unblock")
    assert [ParticipantChange(a).value for a in ("add", "remove", "promote", "demote")] == [
        "add",
        "remove",
        "promote",
        "demote",
    ]


def test_number_queries_carry_the_plus_whatsmeow_wants() -> None:
    assert number_queries(CheckNumbers(phones=["+55 (11) 91234-5678"])) == ["+5511912345678"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (GroupSettings(group=GROUP, locked=True), [("set_group_locked", (True,))]),
        (GroupSettings(group=GROUP, announce=False), [("set_group_announce", (False,))]),
        (GroupSettings(group=GROUP, name="N"), [("set_group_name", ("N",))]),
        (GroupSettings(group=GROUP), []),
    ],
)
def test_only_the_settings_given_are_changed(
    settings: GroupSettings, expected: list[tuple[str, tuple[Any, ...]]]
) -> None:
    assert settings_calls(settings) == expected


# -- neonize's answers, as answers -----------------------------------------------------------


def test_number_checks_answer_every_number_in_order() -> None:
    request = CheckNumbers(phones=["4915112345678", "15550001111", "15550002222", "15550003333"])
    responses = checked(
        on_whatsapp("+15550001111", empty_jid(), is_in=False),
        on_whatsapp("+4915112345678", jid("4915112345678")),
        on_whatsapp("+15550002222", jid("44332211", "lid")),  # answered as a LID
    )
    assert numbers_checked(request, responses, {"44332211@lid": "15550002222@s.whatsapp.net"}) == (
        NumbersChecked(
            numbers=[
                NumberCheck(
                    phone="4915112345678", on_whatsapp=True, jid="4915112345678@s.whatsapp.net"
                ),
                NumberCheck(phone="15550001111", on_whatsapp=False),
                NumberCheck(
                    phone="15550002222", on_whatsapp=True, jid="15550002222@s.whatsapp.net"
                ),
                NumberCheck(phone="15550003333", on_whatsapp=False),  # WhatsApp said nothing
            ]
        )
    )
    # a LID the store cannot turn into a phone JID is the answer as it came
    unresolved = numbers_checked(request, responses)
    assert unresolved.numbers[2].jid == "44332211@lid"


def test_a_canonical_jid_other_than_the_number_is_kept() -> None:
    """WhatsApp may know a number under another JID (a Brazilian number without its 9)."""
    request = CheckNumbers(phones=["5511912345678"])
    responses = checked(on_whatsapp("+5511912345678", jid("551112345678")))
    assert numbers_checked(request, responses).numbers[0].jid == "551112345678@s.whatsapp.net"


async def test_a_number_check_answered_as_a_lid_is_resolved_from_the_store() -> None:
    client = FakeClient(
        is_on_whatsapp=checked(on_whatsapp("+15550002222", jid("44332211", "lid"))),
        get_pn_from_lid=stored(jid("15550002222")),
    )
    answer = await answer_query(client, "contacts_check", CheckNumbers(phones=["15550002222"]))
    assert answer == NumbersChecked(
        numbers=[
            NumberCheck(phone="15550002222", on_whatsapp=True, jid="15550002222@s.whatsapp.net")
        ]
    )
    assert client.plain_calls()[1] == ("get_pn_from_lid", ("44332211@lid",), {})


async def test_a_number_check_naming_nobody_is_nobody_on_whatsapp() -> None:
    """neonize raises "Function returned nothing." when WhatsApp's answer listed no user."""
    client = FakeClient(is_on_whatsapp=exc.IsOnWhatsAppError("Function returned nothing."))
    answer = await answer_query(client, "contacts_check", CheckNumbers(phones=["15550001111"]))
    assert answer == NumbersChecked(numbers=[NumberCheck(phone="15550001111", on_whatsapp=False)])
    failing = FakeClient(is_on_whatsapp=exc.IsOnWhatsAppError("info query timed out"))
    with pytest.raises(QueryError) as failed:  # the control: other errors are errors
        await answer_query(failing, "contacts_check", CheckNumbers(phones=["15550001111"]))
    assert (failed.value.code, failed.value.reason) == ("engine_error", "info query timed out")


def test_a_group_answer_from_neonizes_group_info() -> None:
    info = from_go(
        info_proto(
            name="Team",
            topic="Rules: be kind",
            announce=True,
            locked=True,
            members=[
                member(jid(PEER), super_admin=True),
                member(jid(MEMBER), admin=True),
                member(jid(LID, "lid"), phone=jid("15550002222")),
                member(jid("15550003333"), error=403),  # WhatsApp would not add them
            ],
        )
    )
    group = group_info(info)
    assert group.model_dump(exclude={"created_at", "participants"}) == {
        "jid": GROUP,
        "name": "Team",
        "description": "Rules: be kind",
        "owner": PHONE_JID,
        "announce": True,
        "locked": True,
    }
    assert group.participants == [
        GroupParticipant(jid=PHONE_JID, phone_jid=PHONE_JID, admin=True, super_admin=True),
        GroupParticipant(jid=MEMBER_JID, phone_jid=MEMBER_JID, admin=True),
        GroupParticipant(jid=LID_JID, phone_jid="15550002222@s.whatsapp.net"),
    ]
    # the creation time crosses neonize as a 32-bit float: within its resolution (128 s here)
    assert group.created_at is not None
    assert abs(group.created_at - SENT_AT) <= timedelta(seconds=128)


def test_a_group_without_description_owner_or_creation_time() -> None:
    bare = group_info(from_go(info_proto(created=GO_ZERO_TIME, owner=empty_jid())))
    assert (bare.description, bare.owner, bare.created_at) == (None, None, None)
    assert bare.participants == []
    assert (bare.announce, bare.locked) == (False, False)


async def test_the_group_list_is_every_group_neonize_lists() -> None:
    client = FakeClient(
        get_joined_groups=returned(
            nz.GetJoinedGroupsReturnFunction(
                Group=[info_proto(name="One"), info_proto(name="Two")]
            ),
            "Group",
        )
    )
    answer = await answer_query(client, "groups_list", ListGroups())
    assert isinstance(answer, Groups)
    assert [group.name for group in answer.groups] == ["One", "Two"]


ASKED = [MEMBER_JID, LID_JID, "15550003333@s.whatsapp.net", "15550004444@s.whatsapp.net"]


def test_participant_results_follow_the_people_asked() -> None:
    answered = returned(
        nz.UpdateGroupParticipantsReturnFunction(
            participants=[
                member(jid("15550003333"), error=403),  # privacy: needs an invite
                member(jid(MEMBER)),  # done: no error
                # asked as a LID, answered as the phone JID with the LID beside it
                member(jid("15550002222"), lid=jid(LID, "lid"), error=200),
            ]
        ),
        "participants",
    )
    assert participants_changed(ASKED, answered) == ParticipantsChanged(
        results=[
            ParticipantResult(jid=MEMBER_JID, ok=True),
            ParticipantResult(jid=LID_JID, ok=True),
            ParticipantResult(jid="15550003333@s.whatsapp.net", ok=False, error="403"),
            ParticipantResult(jid="15550004444@s.whatsapp.net", ok=False),  # not in the answer
        ]
    )


@pytest.mark.parametrize(
    ("asked", "other", "expected"),
    [
        (
            PHONE_JID,
            LID_JID,
            LidMapping(jid=PHONE_JID, phone_jid=PHONE_JID, lid=LID_JID, known=True),
        ),
        (
            LID_JID,
            PHONE_JID,
            LidMapping(jid=LID_JID, phone_jid=PHONE_JID, lid=LID_JID, known=True),
        ),
        (PHONE_JID, None, LidMapping(jid=PHONE_JID, phone_jid=PHONE_JID, known=False)),
        (LID_JID, None, LidMapping(jid=LID_JID, lid=LID_JID, known=False)),
    ],
)
def test_lid_mappings(asked: str, other: str | None, expected: LidMapping) -> None:
    assert lid_mapping(asked, other) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (stored(jid(PEER)), LidMapping(jid=LID_JID, phone_jid=PHONE_JID, lid=LID_JID, known=True)),
        (stored(empty_jid()), LidMapping(jid=LID_JID, lid=LID_JID, known=False)),
    ],
)
async def test_lid_resolve_reads_the_store(answer: Any, expected: LidMapping) -> None:
    client = FakeClient(get_pn_from_lid=answer)
    assert await answer_query(client, "lid_resolve", ContactQuery(jid=LID_JID)) == expected


def test_a_profile_from_neonizes_user_info() -> None:
    [business] = users(user(jid(PEER), status="Open 9-5", business="Bakery Ltd"))
    assert contact_profile(
        PHONE_JID, phone_jid=PHONE_JID, lid=LID_JID, info=business.UserInfo, picture="https://p"
    ) == ContactProfile(
        jid=PHONE_JID,
        phone_jid=PHONE_JID,
        lid=LID_JID,
        name="Bakery Ltd",
        about="Open 9-5",
        picture_url="https://p",
        business=True,
    )
    [person] = users(user(jid(PEER)))
    assert contact_profile(
        PHONE_JID, phone_jid=PHONE_JID, lid=None, info=person.UserInfo
    ) == ContactProfile(jid=PHONE_JID, phone_jid=PHONE_JID)
    # a verified name known from the number check only
    [verified] = checked(on_whatsapp(f"+{PEER}", jid(PEER), business="Shop"))
    from_check = contact_profile(
        PHONE_JID,
        phone_jid=PHONE_JID,
        lid=None,
        info=person.UserInfo,
        verified=verified.VerifiedName,
    )
    assert (from_check.name, from_check.business) == ("Shop", True)


@pytest.mark.parametrize(
    ("answer", "url"),
    [
        (None, None),
        (picture(""), None),
        (picture("https://pps.whatsapp.net/v/x"), "https://pps.whatsapp.net/v/x"),
    ],
)
def test_picture_urls(answer: Any, url: str | None) -> None:
    assert picture_url(answer) == url


async def test_a_contact_profile_puts_both_addresses_together() -> None:
    client = FakeClient(
        is_on_whatsapp=checked(on_whatsapp(f"+{PEER}", jid(PEER))),
        get_user_info=users(user(jid(PEER), status="hi")),
        get_lid_from_pn=stored(jid(LID, "lid")),
        get_profile_picture=picture("https://pps.whatsapp.net/v/x"),
    )
    answer = await answer_query(client, "contact_profile", ContactQuery(jid=PEER))
    assert answer == ContactProfile(
        jid=PHONE_JID,
        phone_jid=PHONE_JID,
        lid=LID_JID,
        about="hi",
        picture_url="https://pps.whatsapp.net/v/x",
    )


async def test_a_number_answered_as_a_lid_is_profiled_as_that_lid() -> None:
    client = FakeClient(
        is_on_whatsapp=checked(on_whatsapp(f"+{PEER}", jid(LID, "lid"))),
        get_user_info=users(user(jid(LID, "lid"), status="hi")),
        get_pn_from_lid=stored(empty_jid()),  # the store has not learnt it: the number asked
    )
    answer = await answer_query(client, "contact_profile", ContactQuery(jid=PEER))
    assert answer == ContactProfile(jid=PHONE_JID, phone_jid=PHONE_JID, lid=LID_JID, about="hi")
    assert [name for name, _, _ in client.calls] == [
        "is_on_whatsapp",
        "get_user_info",
        "get_pn_from_lid",
        "get_profile_picture",
    ]


async def test_a_number_not_on_whatsapp_has_no_profile() -> None:
    client = FakeClient(is_on_whatsapp=checked(on_whatsapp(f"+{PEER}", empty_jid(), is_in=False)))
    with pytest.raises(QueryError) as refused:
        await answer_query(client, "contact_profile", ContactQuery(jid=PEER))
    assert refused.value.code == "not_on_whatsapp"
    assert [name for name, _, _ in client.calls] == ["is_on_whatsapp"]  # nothing more asked
    unknown_lid = FakeClient(get_user_info=users())
    with pytest.raises(QueryError) as no_lid:
        await answer_query(unknown_lid, "contact_profile", ContactQuery(jid=LID_JID))
    assert no_lid.value.code == "not_on_whatsapp"


@pytest.mark.parametrize(
    ("error", "url"),
    [
        ("that user or group does not have a profile picture", None),
        ("the user has hidden their profile picture from you", None),
    ],
)
async def test_a_withheld_profile_picture_is_no_picture(error: str, url: str | None) -> None:
    """neonize raises `GetProfilePictureError` with its whole return protobuf."""
    failure = exc.GetProfilePictureError(nz.GetProfilePictureReturnFunction(Error=error))
    client = answering()
    client.answers["get_profile_picture"] = failure
    answer = await answer_query(client, "contact_profile", ContactQuery(jid=PEER))
    assert isinstance(answer, ContactProfile)
    assert answer.picture_url is url
    client.answers["get_profile_picture"] = exc.GetProfilePictureError(
        nz.GetProfilePictureReturnFunction(Error="info query timed out")
    )
    with pytest.raises(QueryError) as failed:  # the control: other errors are errors
        await answer_query(client, "contact_profile", ContactQuery(jid=PEER))
    assert (failed.value.code, failed.value.reason) == ("engine_error", "info query timed out")


async def test_changes_answer_done_invites_links_and_joins_groups() -> None:
    client = answering()
    assert await answer_query(client, "group_leave", GroupQuery(group=GROUP)) == Done()
    invite = await answer_query(client, "group_invite", GroupInvite(group=GROUP))
    assert invite == InviteLink(link=INVITE)
    assert await answer_query(client, "group_join", JoinGroup(link=INVITE)) == Joined(group=GROUP)
    created = await answer_query(
        client, "group_create", CreateGroup(name="Team", participants=[MEMBER])
    )
    assert created == group_info(one_group(info_proto()))


async def test_participants_change_through_neonize() -> None:
    client = answering()
    client.answers["update_group_participants"] = returned(
        nz.UpdateGroupParticipantsReturnFunction(
            participants=[member(jid(MEMBER)), member(jid("15550003333"), error=409)]
        ),
        "participants",
    )
    request = ChangeParticipants(group=GROUP, action="add", participants=[MEMBER, "15550003333"])
    assert await answer_query(client, "group_participants", request) == ParticipantsChanged(
        results=[
            ParticipantResult(jid=MEMBER_JID, ok=True),
            ParticipantResult(jid="15550003333@s.whatsapp.net", ok=False, error="409"),
        ]
    )


# -- errors ----------------------------------------------------------------------------------

ERRORS = [
    # wrapped errors of whatsmeow's group calls (errors.go)
    ("group_info", "that group does not exist", "unknown_group"),
    ("group_info", "you're not participating in that group", "unknown_group"),
    ("group_invite", "that group does not exist", "unknown_group"),
    ("group_invite", "you're not participating in that group", "unknown_group"),
    (
        "group_invite",
        "you don't have the permission to get the group's invite link",
        "not_group_admin",
    ),
    # IQError texts passed on unwrapped
    ("group_participants", "info query returned status 401: not-authorized", "not_group_admin"),
    ("group_settings", "info query returned status 401: not-authorized", "not_group_admin"),
    ("group_settings", "info query returned status 403: forbidden", "unknown_group"),
    ("group_leave", "info query returned status 404: item-not-found", "unknown_group"),
    ("group_leave", "info query returned status 403: forbidden", "unknown_group"),
    # SetGroupTopic looks the group up first and wraps that error
    (
        "group_settings",
        "failed to get old group info to update topic: that group does not exist",
        "unknown_group",
    ),
    ("group_join", "that group invite link has been revoked", "invalid_invite"),
    ("group_join", "that group invite link is not valid", "invalid_invite"),
    ("group_join", "info query returned status 404: item-not-found", "invalid_invite"),
    # not about one group, or not one of these: engine_error with the text
    ("group_create", "info query returned status 403: forbidden", "engine_error"),
    ("group_join", "info query returned status 401: not-authorized", "engine_error"),
    ("group_join", "that group does not exist", "engine_error"),
    ("contact_block", "info query returned status 401: not-authorized", "engine_error"),
    ("group_info", "websocket not connected", "engine_error"),
    ("group_info", "info query timed out", "engine_error"),
    ("group_info", "info query returned status 429: rate-overlimit", "engine_error"),
    ("groups_list", "that group does not exist", "engine_error"),
]


@pytest.mark.parametrize(("name", "text", "code"), ERRORS)
def test_whatsmeow_error_texts_become_codes(name: str, text: str, code: str) -> None:
    error = query_error(name, text)
    assert (error.code, error.reason) == (code, text)
    assert error.code in QUERY_ERRORS


def test_every_group_code_is_reachable() -> None:
    """The positive control: the table produces each code it promises, not only the fallback."""
    assert {code for _, _, code in ERRORS} == {
        "unknown_group",
        "not_group_admin",
        "invalid_invite",
        "engine_error",
    }
    assert query_error("group_info", "").reason  # never an empty reason


@pytest.mark.parametrize(
    ("name", "request_", "method", "failure", "code"),
    [
        (
            "group_info",
            GroupQuery(group=GROUP),
            "get_group_info",
            exc.GetGroupInfoError("that group does not exist"),
            "unknown_group",
        ),
        (
            "group_settings",
            GroupSettings(group=GROUP, locked=True),
            "set_group_locked",
            exc.SetGroupLockedError("info query returned status 401: not-authorized"),
            "not_group_admin",
        ),
        (
            "group_join",
            JoinGroup(link=INVITE),
            "join_group_with_link",
            exc.InviteLinkError("that group invite link has been revoked"),
            "invalid_invite",
        ),
        (
            "presence_subscribe",
            SubscribePresence(jid=PEER),
            "subscribe_presence",
            exc.SubscribePresenceError("websocket not connected"),
            "engine_error",
        ),
    ],
)
async def test_neonize_exceptions_become_query_errors(
    name: str, request_: ContractModel, method: str, failure: NeonizeError, code: str
) -> None:
    client = answering()
    client.answers[method] = failure
    with pytest.raises(QueryError) as failed:
        await answer_query(client, name, request_)
    assert (failed.value.code, failed.value.reason) == (code, str(failure))


async def test_a_settings_change_stops_at_the_first_refusal() -> None:
    client = answering()
    client.answers["set_group_announce"] = exc.SetGroupAnnounceError(
        "info query returned status 401: not-authorized"
    )
    request = GroupSettings(group=GROUP, name="N", announce=True, locked=True)
    with pytest.raises(QueryError):
        await answer_query(client, "group_settings", request)
    assert [name for name, _, _ in client.calls] == ["set_group_name", "set_group_announce"]


async def test_unknown_queries_and_wrong_requests_are_refused() -> None:
    client = answering()
    with pytest.raises(QueryError) as unknown:
        await answer_query(client, "group_burn", GroupQuery(group=GROUP))
    assert unknown.value.code == "unknown_query"
    with pytest.raises(QueryError) as wrong:
        await answer_query(client, "group_info", ListGroups())
    assert wrong.value.code == "invalid_query"
    with pytest.raises(QueryError) as not_a_person:
        await answer_query(client, "contact_block", BlockContact(jid=GROUP))
    assert not_a_person.value.code == "invalid_query"
    assert client.calls == []


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        (PEER, PHONE_JID),
        (f"+{PEER}", PHONE_JID),
        (f"{PEER}:12@s.whatsapp.net", PHONE_JID),
        (f"{LID}:3@lid", LID_JID),
        (LID_JID, LID_JID),
    ],
)
def test_person_addresses(recipient: str, expected: str) -> None:
    assert person_jid(recipient) == expected


@pytest.mark.parametrize(
    "recipient", [GROUP, "123@newsletter", "status@broadcast", "not a number", "12@example.com"]
)
def test_groups_and_channels_are_not_people(recipient: str) -> None:
    with pytest.raises(QueryError) as refused:
        person_jid(recipient)
    assert refused.value.code == "invalid_query"
