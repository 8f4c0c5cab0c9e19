"""The people and groups of the sim engine's stand-in WhatsApp network, and its answers to
queries (`schemas.queries`), so that contacts, groups, presence and calls run end to end.

Only contacts registered with the `contacts` control are on WhatsApp; each may have a LID, a
name, an about text and a business flag. Groups are created by a query (the account is their
super admin) or by the `group` control (someone else's group, with or without the account, which
may or may not be an admin). Every change a query makes is also reported as the event WhatsApp
would send (`group.participants`, `group.settings`, `group.joined`, `group.left`).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from connector.engine import QueryError
from schemas.commands import jid_string
from schemas.envelope import ContractModel, EventData
from schemas.events import (
    GroupJoined,
    GroupLeft,
    GroupParticipantsChanged,
    GroupSettingsChanged,
)
from schemas.queries import (
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
from schemas.sim import SimContact, SimGroup

INVITE_PREFIX = "https://chat.whatsapp.com/"


@dataclass
class _Group:
    jid: str
    name: str
    members: list[str]
    admins: set[str]
    owner: str | None = None
    description: str | None = None
    announce: bool = False
    locked: bool = False
    invite: str = field(default_factory=lambda: secrets.token_urlsafe(16).replace("-", "a"))
    photo: bytes | None = None

    def info(self, directory: SimDirectory) -> GroupInfo:
        return GroupInfo(
            jid=self.jid,
            name=self.name,
            description=self.description,
            owner=self.owner,
            announce=self.announce,
            locked=self.locked,
            participants=[
                GroupParticipant(
                    jid=member,
                    phone_jid=directory.phone_of(member),
                    admin=member in self.admins,
                    super_admin=member == self.owner,
                )
                for member in self.members
            ],
        )


class SimDirectory:
    """Who is on the sim network, under which addresses."""

    def __init__(self) -> None:
        self.contacts: dict[str, SimContact] = {}
        """Phone JID → contact."""
        self._by_lid: dict[str, str] = {}

    def add(self, contact: SimContact) -> None:
        phone = jid_string(contact.phone)
        self.contacts[phone] = contact
        if contact.lid:
            self._by_lid[contact.lid] = phone

    def phone_of(self, jid: str) -> str | None:
        if jid.endswith("@lid"):
            return self._by_lid.get(jid)
        return jid if jid in self.contacts else None

    def other_address(self, jid: str) -> str | None:
        """The LID of a phone JID, or the phone JID of a LID, when known."""
        if jid.endswith("@lid"):
            return self._by_lid.get(jid)
        contact = self.contacts.get(jid)
        return contact.lid if contact is not None else None


class SimNetwork:
    """The sim network as one account (`me`) sees it."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.directory = SimDirectory()
        self.groups: dict[str, _Group] = {}
        self.blocked: set[str] = set()
        self.subscribed: set[str] = set()
        self.rejected_calls: list[str] = []

    def add_group(self, group: SimGroup) -> str:
        jid = group.jid or f"120363{secrets.randbelow(10**12):012d}@g.us"
        members = [jid_string(member) for member in group.participants]
        admins = {jid_string(admin) for admin in group.admins}
        if group.member:
            members.append(self.me)
            if group.admin:
                admins.add(self.me)
        owner = jid_string(group.owner) if group.owner else None
        self.groups[jid] = _Group(jid, group.name, members, admins, owner=owner)
        return jid

    # -- queries: each returns (answer, events the network would send) --------------------

    def answer(self, name: str, request: ContractModel) -> tuple[ContractModel, list[EventData]]:
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise QueryError("unknown_query", f"the sim engine has no query {name!r}")
        answer: tuple[ContractModel, list[EventData]] = handler(request)
        return answer

    def _contacts_check(self, request: CheckNumbers) -> tuple[ContractModel, list[EventData]]:
        numbers = []
        for phone in request.phones:
            jid = jid_string(phone)
            known = jid in self.directory.contacts
            numbers.append(NumberCheck(phone=phone, on_whatsapp=known, jid=jid if known else None))
        return NumbersChecked(numbers=numbers), []

    def _contact_profile(self, request: ContactQuery) -> tuple[ContractModel, list[EventData]]:
        jid = jid_string(request.jid)
        phone = self.directory.phone_of(jid)
        contact = self.directory.contacts.get(phone) if phone else None
        if contact is None:
            raise QueryError("not_on_whatsapp", f"{jid} is not on WhatsApp")
        profile = ContactProfile(
            jid=jid,
            phone_jid=phone,
            lid=contact.lid,
            name=contact.name,
            about=contact.about,
            business=contact.business,
        )
        return profile, []

    def _lid_resolve(self, request: ContactQuery) -> tuple[ContractModel, list[EventData]]:
        jid = jid_string(request.jid)
        other = self.directory.other_address(jid)
        lid, phone = (jid, other) if jid.endswith("@lid") else (other, jid)
        return LidMapping(jid=jid, phone_jid=phone, lid=lid, known=other is not None), []

    def _contact_block(self, request: BlockContact) -> tuple[ContractModel, list[EventData]]:
        jid = jid_string(request.jid)
        if request.block:
            self.blocked.add(jid)
        else:
            self.blocked.discard(jid)
        return Done(), []

    def _presence_subscribe(
        self, request: SubscribePresence
    ) -> tuple[ContractModel, list[EventData]]:
        self.subscribed.add(jid_string(request.jid))
        return Done(), []

    def _groups_list(self, request: ListGroups) -> tuple[ContractModel, list[EventData]]:
        mine = [g.info(self.directory) for g in self.groups.values() if self.me in g.members]
        return Groups(groups=mine), []

    def _group_create(self, request: CreateGroup) -> tuple[ContractModel, list[EventData]]:
        members = [jid_string(member) for member in request.participants]
        unknown = [member for member in members if member not in self.directory.contacts]
        if unknown:
            raise QueryError("not_on_whatsapp", f"not on WhatsApp: {', '.join(unknown)}")
        jid = f"120363{secrets.randbelow(10**12):012d}@g.us"
        group = _Group(jid, request.name, [self.me, *members], {self.me}, owner=self.me)
        self.groups[jid] = group
        return group.info(self.directory), [GroupJoined(group=jid, name=request.name)]

    def _member_group(self, jid: str) -> _Group:
        group = self.groups.get(jid)
        if group is None or self.me not in group.members:
            raise QueryError("unknown_group", f"the account is in no group {jid}")
        return group

    def _admin_group(self, jid: str) -> _Group:
        group = self._member_group(jid)
        if self.me not in group.admins:
            raise QueryError("not_group_admin", f"the account is not an admin of {jid}")
        return group

    def _group_info(self, request: GroupQuery) -> tuple[ContractModel, list[EventData]]:
        return self._member_group(request.group).info(self.directory), []

    def _group_leave(self, request: GroupQuery) -> tuple[ContractModel, list[EventData]]:
        group = self._member_group(request.group)
        group.members.remove(self.me)
        group.admins.discard(self.me)
        return Done(), [GroupLeft(group=group.jid)]

    def _group_participants(
        self, request: ChangeParticipants
    ) -> tuple[ContractModel, list[EventData]]:
        group = self._admin_group(request.group)
        results, changed = [], []
        for member in (jid_string(value) for value in request.participants):
            error = self._change(group, request.action, member)
            results.append(ParticipantResult(jid=member, ok=error is None, error=error))
            if error is None:
                changed.append(member)
        events: list[EventData] = []
        if changed:
            events.append(
                GroupParticipantsChanged(
                    group=group.jid, action=request.action, participants=changed, by=self.me
                )
            )
        return ParticipantsChanged(results=results), events

    def _change(self, group: _Group, action: str, member: str) -> str | None:
        """WhatsApp's per-participant answer: None when done, else its code."""
        present = member in group.members
        if action == "add":
            if member not in self.directory.contacts:
                return "404"
            if present:
                return "409"
            group.members.append(member)
            return None
        if not present:
            return "404"
        if action == "remove":
            group.members.remove(member)
            group.admins.discard(member)
        elif action == "promote":
            group.admins.add(member)
        else:
            group.admins.discard(member)
        return None

    def _group_invite(self, request: GroupInvite) -> tuple[ContractModel, list[EventData]]:
        group = self._admin_group(request.group)
        if request.revoke:
            group.invite = secrets.token_urlsafe(16).replace("-", "a")
        return InviteLink(link=INVITE_PREFIX + group.invite.replace("_", "b")), []

    def _group_join(self, request: JoinGroup) -> tuple[ContractModel, list[EventData]]:
        code = request.link.removeprefix(INVITE_PREFIX)
        for group in self.groups.values():
            if group.invite.replace("_", "b") == code:
                if self.me not in group.members:
                    group.members.append(self.me)
                return Joined(group=group.jid), [GroupJoined(group=group.jid, name=group.name)]
        raise QueryError("invalid_invite", "no group has this invite link (revoked or wrong)")

    def _group_settings(self, request: GroupSettings) -> tuple[ContractModel, list[EventData]]:
        group = self._admin_group(request.group)
        photo = None if request.photo_base64 is None else base64.b64decode(request.photo_base64)
        if photo is not None and not photo.startswith(b"\xff\xd8\xff"):
            # as WhatsApp (whatsmeow's ErrInvalidImageFormat): a group photo is a JPEG
            raise QueryError("engine_error", "invalid image format: a group photo is a JPEG")
        changes = request.model_dump(exclude={"group", "photo_base64"}, exclude_none=True)
        for name, value in changes.items():
            setattr(group, name, value)
        if photo is not None:
            group.photo = photo
        event = GroupSettingsChanged(group=group.jid, by=self.me, **changes)
        return Done(), [event] if changes else []
