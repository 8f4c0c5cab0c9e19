"""Poll votes: wabus's own decryption checked against whatsmeow's, through neonize, offline.

whatsmeow encrypts a vote only for a logged-in device whose store holds the poll's secret, and
nothing in that needs the network. So each round-trip test gives whatsmeow a store of its own:
neonize's `GetAllDevices` makes whatsmeow create its schema in a fresh SQLite file, the test
writes a device row (random keys, a phone-number JID and a LID) and the polls' secrets into
`whatsmeow_message_secrets`, and a real neonize client starts on that file. Its connect fails at
once, on purpose: the proxy it is given is a loopback port nobody listens on (the refusal is
asserted), so whatsmeow never reaches WhatsApp, but neonize keeps the client it built, and
`build_poll_vote` / `DecryptPollVote` then run whatsmeow's own `EncryptPollVote` /
`DecryptPollVote` on that store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connector.engines.neonize_lib import NeonizeClient, NeonizeError, e2e, nz, wa_common
from connector.polls import (
    VoteNotDecrypted,
    _decode_vote,
    _encode_vote,
    decrypt_vote,
    encrypt_vote,
    option_hash,
    selected_options,
)
from tests.neonize_protos import jid, message_event, source

OWN, OWN_LID = "15550009999", "100000000000001"
PEER, PEER_LID = "4915112345678", "200000000000002"
GROUP = "120363000000000001"
OPTIONS = ["Coffee", "Tea", "Cake"]

SECRET = bytes(range(32))
POLL_ID = "3EB0A1B2C3D4E5F6A7B8C9"


# --- option hashes and their names ------------------------------------------------------------


def test_option_hash_is_sha256_of_the_utf8_name() -> None:
    assert option_hash("abc") == bytes.fromhex(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert option_hash("Café ☕") == hashlib.sha256("Café ☕".encode()).digest()


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        pytest.param(["Tea"], ["Tea"], id="one"),
        pytest.param(["Cake", "Coffee"], ["Coffee", "Cake"], id="poll-order-not-vote-order"),
        pytest.param(["Tea", "Tea"], ["Tea"], id="repeated-hash-once"),
        pytest.param(["Tea", "Biscuits"], ["Tea"], id="unknown-hash-ignored"),
        pytest.param(["tea"], [], id="names-are-case-sensitive"),
        pytest.param([], [], id="empty-vote-is-a-removed-vote"),
    ],
)
def test_selected_options(chosen: list[str], expected: list[str]) -> None:
    assert selected_options(OPTIONS, [option_hash(name) for name in chosen]) == expected


# --- the cipher, pure -------------------------------------------------------------------------

WHATSMEOW_VECTOR: dict[str, Any] = {
    "secret": SECRET,
    "poll_id": POLL_ID,
    "poll_sender": f"{PEER_LID}@lid",
    "voter": f"{OWN_LID}@lid",
    "enc_payload": bytes.fromhex(
        "cd3ef22c25ae5c1ccdcc7ef9b6c0bdcf311369aa5e9b6e321f233e90fc83e06135937ae8f05e1f2870d5"
        "50ec4a52994c5819"
    ),
    "enc_iv": bytes.fromhex("9eee265fd3cba8305291dbd0"),
}
"""A vote for "Tea" made by whatsmeow's `BuildPollVote` (the version bundled with neonize 0.5.2)
as in `test_whatsmeow_vote_decrypts` below: the poll sent in a group by PEER_LID, the vote by
OWN_LID. It keeps the derivation pinned even where the Go library is not loaded."""


def test_a_vote_whatsmeow_made_decrypts() -> None:
    assert selected_options(OPTIONS, decrypt_vote(**WHATSMEOW_VECTOR)) == ["Tea"]


def sealed(chosen: list[str], **overrides: Any) -> dict[str, Any]:
    """decrypt_vote's arguments for a vote sealed by `encrypt_vote` (PEER votes on our poll)."""
    fields: dict[str, Any] = {
        "secret": SECRET,
        "poll_id": POLL_ID,
        "poll_sender": f"{OWN}@s.whatsapp.net",
        "voter": f"{PEER}@s.whatsapp.net",
    }
    iv = secrets.token_bytes(12)
    payload = encrypt_vote(**fields, option_hashes=[option_hash(n) for n in chosen], iv=iv)
    return {**fields, "enc_payload": payload, "enc_iv": iv, **overrides}


@pytest.mark.parametrize("chosen", [["Tea"], ["Coffee", "Cake"], []], ids=["one", "two", "none"])
def test_encrypt_then_decrypt(chosen: list[str]) -> None:
    assert selected_options(OPTIONS, decrypt_vote(**sealed(chosen))) == chosen


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param({"voter": f"{PEER_LID}@lid"}, id="voter-in-additional-data"),
        pytest.param({"voter": f"{OWN}@s.whatsapp.net"}, id="voter-is-the-poll-sender"),
        pytest.param({"poll_sender": f"{PEER}@s.whatsapp.net"}, id="poll-sender"),
        pytest.param({"poll_id": POLL_ID[:-1] + "0"}, id="poll-id"),
        pytest.param({"secret": bytes(32)}, id="secret"),
    ],
)
def test_a_vote_opens_only_for_its_poll_and_voter(wrong: dict[str, Any]) -> None:
    assert decrypt_vote(**sealed(["Tea"])) == [option_hash("Tea")]  # the positive control
    with pytest.raises(VoteNotDecrypted, match="authentication failed"):
        decrypt_vote(**sealed(["Tea"], **wrong))


def test_a_device_part_in_a_jid_is_dropped_like_whatsmeow_does() -> None:
    vote = sealed(["Tea"])
    as_devices = {
        **vote,
        "poll_sender": f"{OWN}:12@s.whatsapp.net",
        "voter": f"{PEER}.1:3@s.whatsapp.net",
    }
    assert decrypt_vote(**as_devices) == [option_hash("Tea")]


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        pytest.param(lambda p, iv: (p[:-1], iv), "authentication failed", id="last-byte-cut"),
        pytest.param(lambda p, iv: (p[:15], iv), "shorter than a GCM tag", id="shorter-than-tag"),
        pytest.param(lambda p, iv: (b"", iv), "shorter than a GCM tag", id="empty"),
        pytest.param(
            lambda p, iv: (p[:-1] + bytes([p[-1] ^ 1]), iv), "authentication failed", id="bit-flip"
        ),
        pytest.param(lambda p, iv: (p, iv[:8]), "IV is 8 bytes", id="short-iv"),
    ],
)
def test_a_damaged_vote_is_not_decrypted(cut: Any, reason: str) -> None:
    vote = sealed(["Tea"])
    vote["enc_payload"], vote["enc_iv"] = cut(vote["enc_payload"], vote["enc_iv"])
    with pytest.raises(VoteNotDecrypted, match=reason):
        decrypt_vote(**vote)


# --- PollVoteMessage, against neonize's protobuf class ------------------------------------------


@pytest.mark.parametrize(
    "hashes",
    [[], [option_hash("Tea")], [option_hash(n) for n in OPTIONS], [b"", b"x" * 300]],
    ids=["empty", "one", "three", "empty-and-long-values"],
)
def test_vote_protobuf_matches_neonize(hashes: list[bytes]) -> None:
    theirs = e2e.PollVoteMessage(selectedOptions=hashes).SerializeToString()
    assert _encode_vote(hashes) == theirs
    assert _decode_vote(theirs) == hashes
    assert list(e2e.PollVoteMessage.FromString(_encode_vote(hashes)).selectedOptions) == hashes


def test_vote_protobuf_skips_fields_it_does_not_know() -> None:
    known = e2e.PollVoteMessage(selectedOptions=[option_hash("Tea")]).SerializeToString()
    # field 2 varint, field 3 fixed64, field 4 bytes, field 5 fixed32
    unknown = b"\x10\x96\x01" + b"\x19" + bytes(8) + b"\x22\x02hi" + b"\x2d" + bytes(4)
    assert _decode_vote(unknown + known) == [option_hash("Tea")]


@pytest.mark.parametrize(
    "plaintext",
    [b"\x0a\x05abc", b"\x0a", b"\x80", b"\x0b", b"\x00\x00", b"\x19\x00"],
    ids=["field-past-end", "no-length", "truncated-key", "group", "field-zero", "short-fixed64"],
)
def test_a_malformed_vote_protobuf_is_not_decrypted(plaintext: bytes) -> None:
    with pytest.raises(VoteNotDecrypted, match="vote protobuf"):
        _decode_vote(plaintext)


# --- against whatsmeow, through neonize -------------------------------------------------------


@dataclass(frozen=True)
class Poll:
    chat: str
    sender: str
    """The poll's sender as the vote's key names it; whatsmeow stores the non-device form."""
    voter: str
    """Who votes: OWN (or OWN_LID) when whatsmeow votes, a peer when wabus does."""

    @property
    def is_group(self) -> bool:
        return self.chat.endswith("@g.us")


THEIR_POLLS = {
    "direct-chat-phone-numbers": Poll(
        f"{PEER}@s.whatsapp.net", f"{PEER}:3@s.whatsapp.net", f"{OWN}@s.whatsapp.net"
    ),
    "group-lids": Poll(f"{GROUP}@g.us", f"{PEER_LID}:3@lid", f"{OWN_LID}@lid"),
}
"""Polls a peer sent, for whatsmeow to vote on (it votes as our LID when the poll came from a
LID, as our phone number otherwise)."""

OUR_POLLS = {
    "direct-chat-phone-numbers": Poll(
        f"{PEER}@s.whatsapp.net", f"{OWN}@s.whatsapp.net", f"{PEER}:2@s.whatsapp.net"
    ),
    "group-lids": Poll(f"{GROUP}@g.us", f"{OWN_LID}@lid", f"{PEER_LID}:2@lid"),
}
"""Polls we sent, for a peer's vote (made by wabus) to reach whatsmeow."""


def bare(address: str) -> str:
    user, _, server = address.partition("@")
    return f"{user.partition(':')[0]}@{server}"


def parsed(address: str) -> Any:
    user, _, server = address.partition("@")
    name, _, device = user.partition(":")
    return jid(name, server, int(device or 0))


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound (so nothing else takes it) but never listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def whatsmeow_store(db: Path, polls: list[Poll], secret: bytes) -> None:
    """whatsmeow's schema in `db` (made by whatsmeow), a logged-in device, and `secret` as the
    message secret of each poll (id POLL_ID). Go has the file open but idle while this writes."""
    from neonize.aioze.client import ClientFactory  # after neonize_lib's quiet import

    assert ClientFactory.get_all_devices_from_db(str(db)) == []
    device = f"{OWN}:7@s.whatsapp.net"
    with contextlib.closing(sqlite3.connect(db)) as store, store:
        store.execute(
            "INSERT INTO whatsmeow_device (jid, lid, registration_id, noise_key, identity_key,"
            " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
            " adv_account_sig, adv_account_sig_key, adv_device_sig, push_name)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device,
                f"{OWN_LID}:7@lid",
                1234,
                *(secrets.token_bytes(32) for _ in range(3)),
                1,
                secrets.token_bytes(64),
                secrets.token_bytes(32),
                b"",
                secrets.token_bytes(64),
                secrets.token_bytes(32),
                secrets.token_bytes(64),
                "Shop",
            ),
        )
        store.executemany(
            "INSERT INTO whatsmeow_message_secrets"
            " (our_jid, chat_jid, sender_jid, message_id, key) VALUES (?, ?, ?, ?, ?)",
            [(device, poll.chat, bare(poll.sender), POLL_ID, secret) for poll in polls],
        )


@pytest.fixture
async def whatsmeow(tmp_path: Path) -> AsyncIterator[NeonizeClient]:
    """A neonize client on its own logged-in whatsmeow store, never connected."""
    from neonize._binder import ProxySettings  # after neonize_lib's quiet import

    db = tmp_path / "whatsmeow.db"
    whatsmeow_store(db, [*THEIR_POLLS.values(), *OUR_POLLS.values()], SECRET)
    client = NeonizeClient(str(db), f"polls-{uuid.uuid4().hex}")
    try:
        with refusing_port() as port:
            connecting = await client.connect(
                ProxySettings(proxy_address=f"socks5://127.0.0.1:{port}")
            )
            with pytest.raises(NeonizeError, match="connection refused"):
                await asyncio.wait_for(connecting, 30)
        yield client
    finally:
        await client.stop()


def poll_info(poll: Poll) -> Any:
    return nz.MessageInfo(
        MessageSource=source(parsed(poll.chat), parsed(poll.sender), is_group=poll.is_group),
        ID=POLL_ID,
        ServerID=0,
        Type="poll",
        Pushname="",
        Timestamp=0,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
    )


@pytest.mark.parametrize("chosen", [["Tea"], ["Cake", "Coffee"], []], ids=["one", "two", "none"])
@pytest.mark.parametrize("poll", THEIR_POLLS.values(), ids=THEIR_POLLS.keys())
async def test_whatsmeow_vote_decrypts(
    whatsmeow: NeonizeClient, poll: Poll, chosen: list[str]
) -> None:
    message = await whatsmeow.build_poll_vote(poll_info(poll), chosen)
    update = message.pollUpdateMessage
    assert (update.pollCreationMessageKey.ID, update.pollCreationMessageKey.fromMe) == (
        POLL_ID,
        False,
    )
    vote = update.vote
    args = (POLL_ID, bare(poll.sender), poll.voter, vote.encPayload, vote.encIV)

    hashes = decrypt_vote(SECRET, *args)

    assert selected_options(OPTIONS, hashes) == [n for n in OPTIONS if n in chosen]
    with pytest.raises(VoteNotDecrypted):
        decrypt_vote(secrets.token_bytes(32), *args)


def whatsmeow_decrypts(client: NeonizeClient, event: Any) -> Any:
    """neonize's `DecryptPollVote`, called directly: neonize 0.5.2's `decrypt_poll_vote` does not
    convert that function's Go result to bytes (it is missing from `_binder`'s list) and fails
    with a TypeError."""
    from neonize._binder import consume_bytes_struct, gocode  # after neonize_lib's quiet import

    data = event.SerializeToString()
    answer = nz.ReturnFunctionWithError.FromString(
        consume_bytes_struct(gocode.DecryptPollVote(client.uuid, data, len(data)), None, ())
    )
    if answer.Error:
        raise VoteNotDecrypted(answer.Error)
    return answer.PollVoteMessage


@pytest.mark.parametrize("poll", OUR_POLLS.values(), ids=OUR_POLLS.keys())
async def test_a_vote_wabus_made_decrypts_in_whatsmeow(
    whatsmeow: NeonizeClient, poll: Poll
) -> None:
    def arriving(voter: str) -> Any:
        iv = secrets.token_bytes(12)
        payload = encrypt_vote(
            SECRET, POLL_ID, poll.sender, voter, [option_hash("Cake"), option_hash("Tea")], iv
        )
        update = e2e.PollUpdateMessage(
            pollCreationMessageKey=wa_common.MessageKey(
                remoteJID=poll.chat if poll.is_group else f"{OWN}@s.whatsapp.net",
                fromMe=False,
                ID=POLL_ID,
                participant=poll.sender if poll.is_group else None,
            ),
            vote=e2e.PollEncValue(encPayload=payload, encIV=iv),
            senderTimestampMS=1,
        )
        return message_event(
            e2e.Message(pollUpdateMessage=update),
            message_id="3EB0FFFF0000111122223333",
            chat=parsed(poll.chat),
            sender=parsed(poll.voter),
            is_group=poll.is_group,
        )

    vote = await asyncio.to_thread(whatsmeow_decrypts, whatsmeow, arriving(poll.voter))

    assert selected_options(OPTIONS, list(vote.selectedOptions)) == ["Tea", "Cake"]
    # the control: sealed for someone other than the sender, whatsmeow refuses it too
    someone_else = f"{PEER}@s.whatsapp.net" if poll.is_group else f"{PEER_LID}@lid"
    with pytest.raises(VoteNotDecrypted, match="message authentication failed"):
        await asyncio.to_thread(whatsmeow_decrypts, whatsmeow, arriving(someone_else))
