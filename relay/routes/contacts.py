"""Contacts, asked of the connector running the instance (`schemas.queries`): which numbers have
WhatsApp, a contact's profile, its phone number ↔ LID, blocking, following its presence."""

from __future__ import annotations

from starlette.responses import Response

from relay.endpoints import Call, Endpoint
from relay.routes.queries import answer_query, query_replies, query_request
from schemas.queries import (
    BlockContact,
    CheckNumbers,
    ContactProfile,
    ContactQuery,
    Done,
    LidMapping,
    NumbersChecked,
    SubscribePresence,
)

_JID = ("jid",)


async def check_numbers(call: Call) -> Response:
    request = query_request(call, CheckNumbers, body=True)
    return await answer_query(call, "contacts_check", request)


async def contact_profile(call: Call) -> Response:
    return await answer_query(call, "contact_profile", query_request(call, ContactQuery, path=_JID))


async def resolve_lid(call: Call) -> Response:
    return await answer_query(call, "lid_resolve", query_request(call, ContactQuery, path=_JID))


async def block_contact(call: Call) -> Response:
    request = query_request(call, BlockContact, path=_JID, fixed={"block": True})
    return await answer_query(call, "contact_block", request)


async def unblock_contact(call: Call) -> Response:
    request = query_request(call, BlockContact, path=_JID, fixed={"block": False})
    return await answer_query(call, "contact_block", request)


async def subscribe_presence(call: Call) -> Response:
    request = query_request(call, SubscribePresence, path=_JID)
    return await answer_query(call, "presence_subscribe", request)


_NOT_ON_WHATSAPP = {404: "`not_on_whatsapp`: no WhatsApp account has this number"}
_CONTACT = "/v1/instances/{instance}/contacts/{jid}"
_JID_NOTE = (
    "`{jid}` is a phone number (international, digits) or a JID (`…@s.whatsapp.net`, `…@lid`); "
    "the connector answers within `WABUS_QUERY_TIMEOUT`."
)

TAG = "contacts"
endpoints = [
    Endpoint(
        "POST", "/v1/instances/{instance}/contacts/check", check_numbers, "checkNumbers",
        "Which phone numbers have WhatsApp", TAG,
        query_replies("Each number, with its JID when it has an account.", NumbersChecked),
        body=CheckNumbers,
        description="Up to 50 numbers a request; each answer line is in the order asked.",
    ),
    Endpoint(
        "GET", _CONTACT, contact_profile, "getContact",
        "A contact's profile: about, picture, business name, both addresses", TAG,
        query_replies("The profile.", ContactProfile, _NOT_ON_WHATSAPP), description=_JID_NOTE,
    ),
    Endpoint(
        "GET", _CONTACT + "/lid", resolve_lid, "resolveLid",
        "A contact's phone-number JID and LID, from either", TAG,
        query_replies("Both addresses; `known` is false when the other one is not known yet.",
                      LidMapping),
        description=_JID_NOTE,
    ),
    Endpoint(
        "POST", _CONTACT + "/block", block_contact, "blockContact", "Block a contact", TAG,
        query_replies("Blocked.", Done, _NOT_ON_WHATSAPP), description=_JID_NOTE,
    ),
    Endpoint(
        "POST", _CONTACT + "/unblock", unblock_contact, "unblockContact", "Unblock a contact",
        TAG, query_replies("Unblocked.", Done, _NOT_ON_WHATSAPP), description=_JID_NOTE,
    ),
    Endpoint(
        "POST", _CONTACT + "/presence", subscribe_presence, "subscribePresence",
        "Follow a contact's online / last-seen presence (`presence.update` events follow)", TAG,
        query_replies("Subscribed.", Done, _NOT_ON_WHATSAPP), description=_JID_NOTE,
    ),
]  # fmt: skip
