"""Poll votes, decrypted by wabus itself.

A WhatsApp poll vote is end-to-end encrypted a second time, with a key only the poll's
participants can derive: the poll creation message carries 32 random bytes
(`messageContextInfo.messageSecret`), and each vote (`pollUpdateMessage.vote`) is AES-256-GCM
under a key derived from that secret, the poll's id, the poll's sender and the voter. The
plaintext names no option either, only the SHA-256 of each selected option's name.

whatsmeow can decrypt a vote only while its own store still holds the poll's secret, and it
answers with hashes. wabus keeps each poll's secret and option names itself, so a vote still
decrypts after a restart (or a re-pair) and maps back to the names a web app sent. This module is
the pure part: the key derivation and the cipher, mirroring whatsmeow's `msgsecret.go`
(`generateMsgSecretKey`, `encryptMsgSecret`, `decryptMsgSecret`, `HashPollOptions`), and the
`PollVoteMessage` protobuf (a single `repeated bytes selectedOptions = 1`), encoded and decoded
here so that neither the sim engine nor the connector needs neonize (importing neonize's
protobufs loads its Go library). The tests check all of it against neonize and whatsmeow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.commands import non_device_jid

USE_CASE_POLL_VOTE = b"Poll Vote"
"""whatsmeow's `EncSecretPollVote`: the last part of the HKDF info."""

IV_LENGTH = 12
"""GCM's standard nonce, the only one whatsmeow's `cipher.NewGCM` accepts."""
TAG_LENGTH = 16
KEY_LENGTH = 32

_SELECTED_OPTIONS = 1
"""`PollVoteMessage.selectedOptions`, field 1, length-delimited (wire type 2)."""


class VoteNotDecrypted(Exception):
    """The vote does not open with this poll's secret for this voter, or is malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def option_hash(name: str) -> bytes:
    """What a vote carries for an option: the SHA-256 of its name's UTF-8 bytes."""
    return hashlib.sha256(name.encode()).digest()


def selected_options(options: Sequence[str], hashes: Sequence[bytes]) -> list[str]:
    """The poll's options whose hashes are in the vote, in the poll's order. Unknown hashes are
    ignored; an empty list means the voter took their vote back."""
    chosen = set(hashes)
    return [name for name in options if option_hash(name) in chosen]


def decrypt_vote(
    secret: bytes,
    poll_id: str,
    poll_sender: str,
    voter: str,
    enc_payload: bytes,
    enc_iv: bytes,
) -> list[bytes]:
    """The option hashes a vote selects (`pollUpdateMessage.vote`'s `encPayload`, `encIV`).

    `secret` is the poll's message secret, `poll_id` its message id, `poll_sender` the JID that
    sent the poll and `voter` the JID that sent the vote, both `user@server` (a device part is
    dropped, as whatsmeow does). Raises `VoteNotDecrypted` when the vote does not open.
    """
    if len(enc_iv) != IV_LENGTH:
        raise VoteNotDecrypted(f"IV is {len(enc_iv)} bytes, not {IV_LENGTH}")
    if len(enc_payload) < TAG_LENGTH:
        raise VoteNotDecrypted(f"payload is {len(enc_payload)} bytes, shorter than a GCM tag")
    key, additional_data = _vote_key(secret, poll_id, poll_sender, voter)
    try:
        plaintext = AESGCM(key).decrypt(enc_iv, enc_payload, additional_data)
    except InvalidTag:
        raise VoteNotDecrypted(
            "authentication failed: another poll secret, poll id, poll sender or voter"
        ) from None
    return _decode_vote(plaintext)


def encrypt_vote(
    secret: bytes,
    poll_id: str,
    poll_sender: str,
    voter: str,
    option_hashes: Sequence[bytes],
    iv: bytes,
) -> bytes:
    """The inverse of `decrypt_vote`: the `encPayload` of a vote by `voter` selecting
    `option_hashes`, sealed with `iv` (12 random bytes, sent along as `encIV`). For the sim
    engine, which stands in for the WhatsApp users who vote."""
    if len(iv) != IV_LENGTH:
        raise ValueError(f"IV must be {IV_LENGTH} bytes")
    key, additional_data = _vote_key(secret, poll_id, poll_sender, voter)
    return AESGCM(key).encrypt(iv, _encode_vote(option_hashes), additional_data)


def _vote_key(secret: bytes, poll_id: str, poll_sender: str, voter: str) -> tuple[bytes, bytes]:
    """whatsmeow's `generateMsgSecretKey` for a poll vote: HKDF-SHA256 of the poll's secret
    (no salt) with info = poll id ‖ poll sender ‖ voter ‖ "Poll Vote" (no separators), 32 bytes;
    the GCM additional data is poll id ‖ NUL ‖ voter."""
    poll_sender, voter = non_device_jid(poll_sender), non_device_jid(voter)
    info = poll_id.encode() + poll_sender.encode() + voter.encode() + USE_CASE_POLL_VOTE
    key = HKDF(algorithm=hashes.SHA256(), length=KEY_LENGTH, salt=None, info=info).derive(secret)
    return key, poll_id.encode() + b"\x00" + voter.encode()


def _encode_vote(option_hashes: Sequence[bytes]) -> bytes:
    """`PollVoteMessage{selectedOptions: option_hashes}` serialised (as protobuf does)."""
    out = bytearray()
    for value in option_hashes:
        out += _varint(_SELECTED_OPTIONS << 3 | 2)
        out += _varint(len(value))
        out += value
    return bytes(out)


def _decode_vote(data: bytes) -> list[bytes]:
    """`selectedOptions` of a serialised `PollVoteMessage`; other fields are skipped."""
    selected: list[bytes] = []
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise VoteNotDecrypted("vote protobuf: field number 0")
        if wire_type == 0:
            _, position = _read_varint(data, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _read_varint(data, position)
            end = position + length
            if end > len(data):
                raise VoteNotDecrypted("vote protobuf: field runs past the end")
            if field == _SELECTED_OPTIONS:
                selected.append(data[position:end])
            position = end
        else:
            raise VoteNotDecrypted(f"vote protobuf: unsupported wire type {wire_type}")
        if position > len(data):
            raise VoteNotDecrypted("vote protobuf: field runs past the end")
    return selected


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise VoteNotDecrypted("vote protobuf: truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
