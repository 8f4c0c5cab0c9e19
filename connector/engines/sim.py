"""The `sim` engine: an in-process stand-in for the WhatsApp network.

It behaves like the neonize engine seen from the connector — sessions connect (or wait for a QR
scan), inbound messages arrive as `message.received`, sends get a WhatsApp-like id, connections
drop and devices get logged out — so end-to-end tests, demos and benchmarks run the real
connector, bus and relay. It is never chosen silently: `WABUS_ENGINE=sim` says so. Controls
arrive on `<prefix>.sim.<instance>.<action>` (see `schemas.sim`).

The network side of an instance (paired or not, what was sent) is a `SimDevice` that outlives
connections; with a `data_dir` its send log is a file, so it also outlives a killed connector, as
WhatsApp's record of a message outlives the client that sent it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from connector.engine import (
    Account,
    ConnectError,
    EncryptedVote,
    QueryError,
    SendContext,
    SendError,
    SentMessage,
    SessionListener,
)
from connector.engines.sim_network import SimNetwork
from connector.engines.sim_socket import DeviceSocket
from connector.polls import IV_LENGTH, encrypt_vote, option_hash
from connector.reasons import DisconnectReason
from schemas.commands import MarkRead, Presence, SendMessage, SendPoll, jid_string
from schemas.envelope import ContractModel, utc_now
from schemas.events import CallEnded, CallOffered, MessageReceived, PresenceUpdate
from schemas.sim import (
    ACTIVITY,
    CALL,
    CONTACTS,
    DROP,
    FAIL_CONNECT,
    FAIL_NEXT_SENDS,
    GROUP,
    INBOUND,
    LOGOUT,
    PRESENCE,
    SCAN,
    SENT,
    SimCall,
    SimContacts,
    SimFailConnect,
    SimFailNextSends,
    SimGroup,
    SimInbound,
    SimPresence,
    SimVote,
)
from wabus.logs import get_logger

log = get_logger(__name__)

SIM_PHONE = "15550000000"
SIM_JID = f"{SIM_PHONE}@s.whatsapp.net"
SimPairing = Literal["auto", "qr"]


def whatsapp_like_id() -> str:
    """Shaped like the ids whatsmeow generates (`3EB0` + 18 uppercase hex digits)."""
    return "3EB0" + secrets.token_hex(9).upper()


def context_summary(context: SendContext) -> dict[str, Any]:
    """What the connector prepared for a send, as the sim records it (tests read it back):
    the media after conversion, the link preview, the quoted and targeted messages."""
    summary: dict[str, Any] = {}
    if context.media is not None:
        media = context.media
        summary["media"] = {
            "mimetype": media.mimetype,
            "size": len(media.data),
            "sha256": hashlib.sha256(media.data).hexdigest(),
            "seconds": media.seconds,
            "waveform": list(media.waveform) if media.waveform is not None else None,
            "animated": media.animated,
        }
    if context.preview is not None:
        preview = context.preview
        summary["preview"] = {
            "url": preview.url,
            "title": preview.title,
            "description": preview.description,
            "thumbnail_size": len(preview.thumbnail) if preview.thumbnail else 0,
        }
    if context.mentions:
        summary["mentions"] = list(context.mentions)
    for name, seen in (("quoted", context.quoted), ("target", context.target)):
        if seen is not None:
            summary[name] = seen.model_dump(mode="json", exclude={"raw", "poll_secret"})
    return summary


NETWORK_ACTIONS = frozenset({CONTACTS, GROUP, PRESENCE, CALL})


class SimControlError(ValueError):
    """A sim control message that cannot be played."""


class SimDevice:
    """The network's view of one instance: linked or not, and every message it sent."""

    def __init__(
        self,
        instance: str,
        paired: bool,
        log_path: Path | None,
        socket: DeviceSocket | None = None,
    ) -> None:
        self.instance = instance
        self.socket = socket
        """One connection at a time, across processes sharing the data directory."""
        self.paired = paired
        self.sent: list[dict[str, Any]] = []
        self.failure: SimFailNextSends | None = None
        self.failures_left = 0
        self.failing_connects = 0
        self.reads: list[MarkRead] = []
        self.presences: list[Presence] = []
        self.polls: dict[str, tuple[str, bytes]] = {}
        """Poll id → (author, secret) of every poll sent or played, to encrypt votes with."""
        self.network = SimNetwork(SIM_JID)
        """The people and groups the account sees (kept in memory only)."""
        self._log_path = log_path
        if log_path and log_path.exists():
            self.sent = [json.loads(line) for line in log_path.read_text().splitlines() if line]
        for entry in self.sent:
            if "poll_secret" in entry:
                self.polls[entry["message_id"]] = (SIM_JID, base64.b64decode(entry["poll_secret"]))

    def record(
        self,
        message_id: str,
        message: SendMessage,
        context: SendContext,
        poll_secret: bytes | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "message_id": message_id,
            "data": message.model_dump(mode="json"),
            "context": context_summary(context),
        }
        if poll_secret is not None:
            entry["poll_secret"] = base64.b64encode(poll_secret).decode()
        self.sent.append(entry)
        if self._log_path:
            with self._log_path.open("a") as file:
                file.write(json.dumps(entry) + "\n")
                file.flush()


class SimSession:
    """One connection of a simulated linked device; records what it was asked to do."""

    def __init__(
        self,
        device: SimDevice,
        listener: SessionListener,
        clock: Callable[[], datetime],
        qr_interval: float,
    ) -> None:
        self.instance = device.instance
        self.device = device
        self._listener = listener
        self._clock = clock
        self._qr_interval = qr_interval
        self.is_open = False
        self.in_qr = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sent(self) -> list[tuple[str, SendMessage]]:
        from schemas.commands import parse_send

        return [(entry["message_id"], parse_send(entry["data"])) for entry in self.device.sent]

    async def connect(self) -> None:
        if self.device.failing_connects > 0:
            self.device.failing_connects -= 1
            raise ConnectError(DisconnectReason.NETWORK, "sim: failed to dial (fail_connect)")
        if self.device.paired:
            await self._open()
        else:
            self.in_qr = True
            self._spawn(self._show_qr_codes())

    async def _open(self) -> None:
        self.in_qr, self.is_open = False, True
        if self.device.socket is not None:
            self.device.socket.connect()
        account = Account(jid=SIM_JID, phone=SIM_PHONE, push_name="wabus sim")
        log.info("sim session open", instance=self.instance)
        await self._listener.on_open(account)

    async def _show_qr_codes(self) -> None:
        while self.in_qr:
            code = "2@" + secrets.token_urlsafe(48)
            expires = self._clock() + timedelta(seconds=self._qr_interval)
            await self._listener.on_qr(code, expires)
            await asyncio.sleep(self._qr_interval)

    async def scan(self) -> None:
        self.device.paired = True
        if self.in_qr:
            await self._stop_tasks()
            await self._open()

    async def drop(self) -> None:
        await self._end(DisconnectReason.NETWORK, "sim: connection dropped")

    async def disconnect(self) -> None:
        await self._end(DisconnectReason.STOPPED, "disconnected by wabus")

    async def _end(self, reason: DisconnectReason, detail: str) -> None:
        await self._stop_tasks()
        if self.is_open and self.device.socket is not None:
            self.device.socket.disconnect()
        self.is_open = self.in_qr = False
        await self._listener.on_close(reason, detail)

    async def send(self, message: SendMessage, context: SendContext) -> SentMessage:
        if not self.is_open:
            raise SendError("not_connected", "the sim session is not open", retryable=True)
        device = self.device
        if device.failure and device.failures_left > 0:
            device.failures_left -= 1
            raise SendError(
                device.failure.code,
                "failed by the sim engine on request",
                retryable=device.failure.retryable,
            )
        message_id = whatsapp_like_id()
        secret = secrets.token_bytes(32) if isinstance(message, SendPoll) else None
        device.record(message_id, message, context, secret)
        if secret is not None:
            device.polls[message_id] = (SIM_JID, secret)
        raw = json.dumps(message.model_dump(mode="json")).encode()
        return SentMessage(
            message_id=message_id,
            chat=jid_string(message.to),
            timestamp=self._clock(),
            raw=raw,
            poll_secret=secret,
        )

    async def pair_phone(self, phone: str) -> str:
        code = secrets.token_hex(4).upper()
        code = f"{code[:4]}-{code[4:]}"
        await self._listener.on_pair_code(code, phone)
        return code

    async def logout(self) -> None:
        self.device.paired = False
        await self._end(DisconnectReason.LOGGED_OUT, "logged out")

    async def mark_read(self, request: MarkRead) -> None:
        self.device.reads.append(request)

    async def query(self, name: str, request: ContractModel) -> ContractModel:
        if not self.is_open:
            raise QueryError("instance_not_open", "the sim session is not open")
        answer, events = self.device.network.answer(name, request)
        for event in events:
            await self._listener.on_event(event)
        return answer

    async def reject_call(self, caller: str, call_id: str) -> None:
        self.device.network.rejected_calls.append(call_id)
        ended = CallEnded(call_id=call_id, from_=caller, reason="rejected", timestamp=self._clock())
        self._spawn(self._listener.on_event(ended))

    async def network_control(self, action: str, payload: bytes) -> dict[str, Any]:
        """The controls of the sim network's people, groups, presence and calls."""
        network = self.device.network
        if action == CONTACTS:
            for contact in SimContacts.model_validate_json(payload).contacts:
                network.directory.add(contact)
        elif action == GROUP:
            return {"ok": True, "group": network.add_group(SimGroup.model_validate_json(payload))}
        elif action == PRESENCE:
            presence = SimPresence.model_validate_json(payload)
            jid = jid_string(presence.jid)
            if jid in network.subscribed:
                update = PresenceUpdate(
                    jid=jid, online=presence.online, last_seen=presence.last_seen
                )
                await self._listener.on_event(update)
        elif action == CALL:
            call = SimCall.model_validate_json(payload)
            offer = CallOffered(
                call_id=call.call_id or whatsapp_like_id(),
                from_=jid_string(call.from_),
                video=call.video,
                timestamp=self._clock(),
            )
            await self._listener.on_event(offer)
        return {"ok": True}

    async def set_presence(self, request: Presence) -> None:
        self.device.presences.append(request)

    def play(self, inbound: SimInbound) -> None:
        if not self.is_open:
            raise SimControlError(f"the sim session of {self.instance!r} is not open")
        media = None
        if inbound.media_base64 is not None:
            try:
                media = base64.b64decode(inbound.media_base64, validate=True)
            except binascii.Error as error:
                raise SimControlError(f"media_base64: {error}") from error
        self._spawn(self._play(inbound, media))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play(self, inbound: SimInbound, media: bytes | None) -> None:
        base_id = inbound.id or whatsapp_like_id()
        sender = jid_string(inbound.from_)
        chat = jid_string(inbound.chat) if inbound.chat else sender
        if inbound.vote is not None:
            await self._vote(inbound.vote, base_id, chat, sender)
            return
        for number in range(1, inbound.repeat + 1):
            numbered = inbound.repeat > 1
            message_id = f"{base_id}{number:07d}" if numbered else base_id
            text = f"{inbound.text} #{number}" if numbered and inbound.text else inbound.text
            data = MessageReceived(
                message_id=message_id,
                chat=chat,
                from_=sender,
                from_alt=self.device.network.directory.other_address(sender),
                from_me=False,
                type=inbound.type,
                text=text,
                timestamp=self._clock(),
                push_name=inbound.push_name,
                is_group=chat.endswith("@g.us"),
                media=inbound.media,
                location=inbound.location,
                contact=inbound.contacts[0] if inbound.contacts else None,
                contacts=inbound.contacts,
                reaction=inbound.reaction,
                poll=inbound.poll,
                target_message_id=inbound.target_message_id,
                quoted_message_id=inbound.quoted_message_id,
                mentions=inbound.mentions,
                view_once=inbound.view_once,
                forwarded=inbound.forwarded,
            )
            secret = None
            if inbound.poll is not None:
                secret = secrets.token_bytes(32)
                self.device.polls[message_id] = (sender, secret)
            raw = data.model_dump_json(by_alias=True).encode()
            await self._listener.on_event(
                data, source_id=message_id, media=media, raw=raw, poll_secret=secret
            )
            if inbound.interval_ms and number < inbound.repeat:
                await asyncio.sleep(inbound.interval_ms / 1000)

    async def _vote(self, vote: SimVote, message_id: str, chat: str, voter: str) -> None:
        """A vote encrypted as WhatsApp encrypts it, with the poll's secret as the sim knows
        it (a poll it never saw gets a secret nobody has: the vote cannot be decrypted)."""
        author, secret = self.device.polls.get(vote.poll_id, (SIM_JID, secrets.token_bytes(32)))
        iv = secrets.token_bytes(IV_LENGTH)
        hashes = [option_hash(name) for name in vote.options]
        payload = encrypt_vote(secret, vote.poll_id, author, voter, hashes, iv)
        encrypted = EncryptedVote(
            message_id=message_id,
            chat=chat,
            voter=voter,
            poll_id=vote.poll_id,
            poll_sender=author,
            enc_payload=payload,
            enc_iv=iv,
            timestamp=self._clock(),
        )
        await self._listener.on_poll_vote(encrypted)

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class SimEngine:
    """Sessions start paired (`pairing="auto"`) or wait for a `scan` while showing QR codes
    every `qr_interval` seconds (`pairing="qr"`)."""

    name = "sim"

    def __init__(
        self,
        clock: Callable[[], datetime] = utc_now,
        *,
        pairing: SimPairing = "auto",
        qr_interval: float = 20.0,
        data_dir: Path | None = None,
    ) -> None:
        self._clock = clock
        self._pairing = pairing
        self._qr_interval = qr_interval
        self._data_dir = data_dir
        self.devices: dict[str, SimDevice] = {}
        self.sessions: dict[str, SimSession] = {}
        """The latest connection of each instance."""

    def device(self, instance: str) -> SimDevice:
        device = self.devices.get(instance)
        if device is None:
            log_path = socket = None
            if self._data_dir:
                self._data_dir.mkdir(parents=True, exist_ok=True)
                log_path = self._data_dir / f"{instance}.sent.jsonl"
                socket = DeviceSocket(self._data_dir, instance)
            device = SimDevice(instance, self._pairing == "auto", log_path, socket)
            self.devices[instance] = device
        return device

    def open_session(self, instance: str, listener: SessionListener) -> SimSession:
        session = SimSession(self.device(instance), listener, self._clock, self._qr_interval)
        self.sessions[instance] = session
        return session

    async def control(self, instance: str, action: str, payload: bytes) -> dict[str, Any]:
        """Play one control message (see `schemas.sim`); returns the answer."""
        session = self.sessions.get(instance)
        if session is None:
            raise SimControlError(f"no session for instance {instance!r}")
        device = session.device
        try:
            if action == INBOUND:
                session.play(SimInbound.model_validate_json(payload))
            elif action == FAIL_NEXT_SENDS:
                failure = SimFailNextSends.model_validate_json(payload)
                device.failure, device.failures_left = failure, failure.count
            elif action == SENT:
                return {"ok": True, "sent": list(device.sent)}
            elif action == ACTIVITY:
                return {
                    "ok": True,
                    "open": session.is_open,
                    "reads": [read.model_dump(mode="json") for read in device.reads],
                    "presences": [p.model_dump(mode="json") for p in device.presences],
                    "blocked": sorted(device.network.blocked),
                    "subscribed": sorted(device.network.subscribed),
                    "rejected_calls": list(device.network.rejected_calls),
                }
            elif action == SCAN:
                await session.scan()
            elif action == DROP:
                await session.drop()
            elif action == LOGOUT:
                await session.logout()
            elif action == FAIL_CONNECT:
                device.failing_connects = SimFailConnect.model_validate_json(payload or b"{}").count
            elif action in NETWORK_ACTIONS:
                return await session.network_control(action, payload)
            else:
                raise SimControlError(f"unknown sim action {action!r}")
        except ValidationError as error:
            raise SimControlError(str(error)) from error
        return {"ok": True}

    async def close(self) -> None:
        for session in self.sessions.values():
            await session._stop_tasks()
        self.sessions.clear()
