"""The neonize engine with real neonize clients: against SQLite and Postgres stores, offline
(this machine has no route to WhatsApp), and with the network side played by the test through
neonize's own event dispatch."""

from __future__ import annotations

import asyncio
import ctypes
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from connector.engine import Account, ConnectError, SendError
from connector.engines.neonize import NeonizeClient, NeonizeEngine, NeonizeSession
from connector.engines.neonize_lib import EVENT_TO_INT, NeonizeError, NewAClient, e2e, nz
from connector.engines.neonize_store import PostgresStore, SqliteStore, StoreLocation
from connector.reasons import DisconnectReason
from connector.service import build_engine
from schemas.commands import MarkRead, SendImage, SendText
from schemas.envelope import EventData
from schemas.events import MessageKind, MessageReceipt, MessageReceived, PresenceChat
from tests.neonize_protos import (
    OWN,
    device,
    message_event,
    presence_event,
    receipt_event,
)
from tests.support import eventually
from wabus.settings import Settings

OFFLINE_CONNECT_TIMEOUT = 15.0
"""An offline dial fails in milliseconds, but a DNS lookup here now and then stalls for the
resolver's 5 s timeout first; the attempt must still end in a ConnectError."""
CONNECT_BOUND = 30.0
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Recorder:
    """A session listener that writes down what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_next = False

    def of(self, kind: str) -> list[Any]:
        return [payload for name, payload in self.calls if name == kind]

    async def _record(self, kind: str, payload: Any) -> None:
        self.calls.append((kind, payload))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("listener failure")

    async def on_qr(self, code: str, expires_at: datetime) -> None:
        await self._record("qr", (code, expires_at))

    async def on_pair_code(self, code: str, phone: str) -> None:
        await self._record("pair_code", (code, phone))

    async def on_open(self, account: Account) -> None:
        await self._record("open", account)

    async def on_close(self, reason: DisconnectReason, detail: str) -> None:
        await self._record("close", (reason, detail))

    async def on_event(
        self, data: EventData, source_id: str | None = None, media: bytes | None = None
    ) -> None:
        await self._record("event", (data, source_id, media))


# -- real clients, real stores, no route to WhatsApp ---------------------------------------


async def connect_offline(session: NeonizeSession) -> ConnectError:
    async with asyncio.timeout(CONNECT_BOUND):
        with pytest.raises(ConnectError) as failed:
            await session.connect()
    return failed.value


async def test_offline_connect_on_sqlite_fails_cleanly_every_time(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    engine = NeonizeEngine(
        SqliteStore(tmp_path / "neonize"), connect_timeout=OFFLINE_CONNECT_TIMEOUT
    )
    listener = Recorder()
    session = engine.open_session("sqlite-offline", listener)
    for _ in range(3):  # the supervisor retries; each attempt fails the same clean way
        error = await connect_offline(session)
        assert error.reason is DisconnectReason.NETWORK
        assert not error.reason.is_permanent  # the supervisor retries it on its schedule
        assert "dial" in error.detail
        assert not session.running
    assert (tmp_path / "neonize" / "sqlite-offline.sqlite3").stat().st_size > 0
    with pytest.raises(SendError) as refused:
        await session.send(SendText(to="4915112345678", text="hi"))
    assert (refused.value.code, refused.value.retryable) == ("not_connected", True)
    await session.disconnect()
    assert listener.calls == [("close", (DisconnectReason.STOPPED, "disconnected by wabus"))]
    await engine.close()
    printed = capfd.readouterr().out.splitlines()
    # Only wabus's own log lines (structlog prints to stdout in tests): nothing from neonize or Go.
    assert [line for line in printed if "instance=sqlite-offline" not in line] == []


FAKE_DEVICE = "15550009999:7@s.whatsapp.net"


async def insert_device(database_url: str, jid: str) -> None:
    """A device row as whatsmeow writes it after pairing (keys of the right sizes)."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key,"
            " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
            " adv_account_sig, adv_account_sig_key, adv_device_sig)"
            " VALUES ($1, 1, $2, $2, $2, 1, $3, $2, $2, $3, $2, $3)",
            jid,
            b"k" * 32,
            b"s" * 64,
        )
    finally:
        await connection.close()


async def test_postgres_store_gives_each_instance_its_own_device(database_url: str) -> None:
    store = PostgresStore(database_url)
    engine = NeonizeEngine(store, connect_timeout=OFFLINE_CONNECT_TIMEOUT)
    for instance in ("pg-one", "pg-two"):
        error = await connect_offline(engine.open_session(instance, Recorder()))
        # whatsmeow set up its tables before dialling: the URL reached lib/pq intact.
        assert error.reason is DisconnectReason.NETWORK, error.detail
    assert (await store.location("pg-one")).new_device  # never paired: a new device
    await insert_device(database_url, FAKE_DEVICE)
    await store.remember("pg-one", FAKE_DEVICE)
    one, two = await store.location("pg-one"), await store.location("pg-two")
    assert (one.jid, one.new_device) == (FAKE_DEVICE, False)
    assert (two.jid, two.new_device) == (None, True)
    assert one.name == two.name  # one shared database
    # pg-one now resumes its device by JID: whatsmeow loads it and fails only at the dial.
    error = await connect_offline(engine.open_session("pg-one", Recorder()))
    assert error.reason is DisconnectReason.NETWORK, error.detail
    await store.forget("pg-one")
    assert (await store.location("pg-one")).new_device
    await engine.close()


async def test_postgres_store_drops_a_device_whatsmeow_no_longer_has(database_url: str) -> None:
    store = PostgresStore(database_url)
    await store.remember("pg-stale", "15550001111:2@s.whatsapp.net")
    location = await store.location("pg-stale")  # before whatsmeow ever created its tables
    assert (location.jid, location.new_device) == (None, True)
    connection = await asyncpg.connect(database_url)
    try:
        left = await connection.fetchval("SELECT count(*) FROM wabus_neonize_device")
    finally:
        await connection.close()
    assert left == 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_store_is_a_connect_error(tmp_path: Path) -> None:
    store = PostgresStore(f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    session = NeonizeEngine(store).open_session("pg-down", Recorder())
    error = await connect_offline(session)
    assert error.reason is DisconnectReason.UNKNOWN
    assert error.detail.startswith("store unavailable")


# -- the network side played by the test ---------------------------------------------------


class FakeWhatsApp(NeonizeClient):
    """A real `NeonizeClient` whose network side the test plays: `connect` starts a run that
    lasts until `stop`, events come in through neonize's own dispatch (`Event.execute`, called
    from a thread as Go does), and calls that would reach WhatsApp are answered here."""

    def __init__(self, name: str, uuid: str) -> None:
        super().__init__(name, uuid)
        self.uuid_text = uuid
        self.sent: list[tuple[Any, Any]] = []
        self.uploads: list[tuple[bytes, Any]] = []
        self.stopped = False
        self.logged_out = False
        self._end: asyncio.Future[str | None] | None = None

    async def connect(self, proxy_settings: Any = None) -> asyncio.Task[None]:
        loop = asyncio.get_running_loop()
        self._end = loop.create_future()
        task = self.connect_task = loop.create_task(self._run(self._end))
        return task

    @staticmethod
    async def _run(end: asyncio.Future[str | None]) -> None:
        error = await end
        if error:
            raise NeonizeError(error)

    def end(self, error: str | None = None) -> None:
        assert self._end is not None
        self._end.set_result(error)

    async def stop(self) -> None:
        self.stopped = True
        if self._end is not None and not self._end.done():
            self.end()

    async def go(self, event: Any) -> None:
        """Deliver `event` the way Go does: serialised, through `Event.execute`, from a thread."""
        data = event.SerializeToString()
        buffer = ctypes.create_string_buffer(data, len(data))
        code = EVENT_TO_INT[type(event)]
        await asyncio.to_thread(self.event.execute, 0, ctypes.addressof(buffer), len(data), code)

    async def go_qr(self, code: str) -> None:
        buffer = ctypes.create_string_buffer(code.encode())
        await asyncio.to_thread(self._NewAClient__onQr, 0, ctypes.addressof(buffer))

    async def go_login_status(self, status: str) -> None:
        buffer = ctypes.create_string_buffer(status.encode())
        await asyncio.to_thread(self._NewAClient__onLoginStatus, 0, ctypes.addressof(buffer))

    async def PairPhone(self, phone: str, show_push_notification: bool, **options: Any) -> str:
        return "ABCD-EFGH"

    async def download_any(self, message: Any) -> bytes:
        return b"media bytes of " + str(message.imageMessage.mimetype).encode()

    async def upload(self, binary: bytes, media_type: Any = None) -> Any:
        self.uploads.append((binary, media_type))
        return nz.UploadResponse(
            url="https://mmg.whatsapp.net/x", DirectPath="/x", Handle="", FileLength=len(binary)
        )

    async def send_message(self, to: Any, message: Any, **options: Any) -> Any:
        self.sent.append((to, message))
        return nz.SendResponse(ID=f"3EB0SENT{len(self.sent):014d}", Timestamp=1_772_366_400)

    async def logout(self) -> None:
        self.logged_out = True


class RecordingStore(SqliteStore):
    """SQLite files, with a known device per instance and a record of what the session tells."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.devices: dict[str, str] = {}
        self.told: list[tuple[str, str | None]] = []

    async def location(self, instance: str) -> StoreLocation:
        jid = self.devices.get(instance)
        return StoreLocation(str(self.folder / instance), jid=jid, new_device=jid is None)

    async def remember(self, instance: str, jid: str) -> None:
        self.told.append((instance, jid))

    async def forget(self, instance: str) -> None:
        self.told.append((instance, None))


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.clients: list[FakeWhatsApp] = []
        self.listener = Recorder()
        self.store = RecordingStore(tmp_path / "neonize")
        self.engine = NeonizeEngine(
            self.store,
            connect_timeout=5.0,
            clock=lambda: NOW,
            client_factory=self._client,
        )
        self.session = self.engine.open_session("played", self.listener)

    def _client(self, name: str, uuid: str) -> FakeWhatsApp:
        client = FakeWhatsApp(name, uuid)
        self.clients.append(client)
        return client

    @property
    def client(self) -> FakeWhatsApp:
        return self.clients[-1]

    async def reported(self, kind: str, count: int = 1) -> list[Any]:
        async def enough() -> list[Any] | None:
            found = self.listener.of(kind)
            return found if len(found) >= count else None

        result: list[Any] = await eventually(enough, timeout=5.0)
        return result

    async def open(self) -> None:
        """Connect, and play a stored device logging in."""
        task = asyncio.create_task(self.session.connect())
        await eventually(self._has_client, timeout=5.0)
        await self.client.go(device())
        await self.client.go(nz.Connected(status=True))
        await task
        await self.reported("open")

    async def _has_client(self) -> bool:
        return bool(self.clients) and self.client.connect_task is not None


@pytest.fixture
async def played(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    await harness.engine.close()


async def test_qr_codes_reach_the_listener_raw_with_whatsmeows_lifetimes(played: Harness) -> None:
    connecting = asyncio.create_task(played.session.connect())
    await eventually(played._has_client, timeout=5.0)
    await played.client.go_qr("2@first,code")
    await connecting  # a QR is progress: connect returns
    await played.client.go_qr("2@second,code")
    qrs = await played.reported("qr", 2)
    assert qrs == [
        ("2@first,code", NOW + timedelta(seconds=60)),
        ("2@second,code", NOW + timedelta(seconds=20)),
    ]
    assert await played.session.pair_phone("4915112345678") == "ABCD-EFGH"
    assert played.listener.of("pair_code") == [("ABCD-EFGH", "4915112345678")]


async def test_unscanned_qr_ends_as_qr_exhausted_without_stopping_go_unsafely(
    played: Harness,
) -> None:
    connecting = asyncio.create_task(played.session.connect())
    await eventually(played._has_client, timeout=5.0)
    await played.client.go_qr("2@only,code")
    await connecting
    await played.client.go_login_status("timeout")
    closes = await played.reported("close")
    assert closes[0][0] is DisconnectReason.QR_EXHAUSTED
    assert not played.client.stopped  # Go is still in its QR phase: Stop would crash it later
    assert not played.session.running


async def test_login_messages_media_receipts_and_presence_in_order(played: Harness) -> None:
    await played.open()
    assert played.listener.of("open") == [
        Account(jid=f"{OWN}@s.whatsapp.net", phone=OWN, push_name="Shop")
    ]
    image = e2e.ImageMessage(
        mimetype="image/png", caption="pic", directPath="/v/x", fileLength=9, URL="https://x"
    )
    texts = [
        message_event(e2e.Message(conversation=f"n{i}"), message_id=f"ID{i}") for i in range(30)
    ]
    for event in texts:
        await played.client.go(event)
    await played.client.go(message_event(e2e.Message(imageMessage=image), message_id="IMG"))
    await played.client.go(receipt_event("READ", ["ID1"]))
    await played.client.go(presence_event("COMPOSING", "AUDIO"))
    events = await played.reported("event", 33)
    received = [data for data, _, _ in events[:31]]
    assert all(isinstance(data, MessageReceived) for data in received)
    assert [data.text for data in received[:30]] == [f"n{i}" for i in range(30)]
    assert [source for _, source, _ in events[:30]] == [f"ID{i}" for i in range(30)]
    image_data, image_id, media = events[30]
    assert (image_data.type, image_id, media) == (
        MessageKind.IMAGE,
        "IMG",
        b"media bytes of image/png",
    )
    assert isinstance(events[31][0], MessageReceipt)
    assert isinstance(events[32][0], PresenceChat)
    assert events[32][0].state == "recording"


async def test_a_failing_listener_does_not_stop_the_session(played: Harness) -> None:
    await played.open()
    played.listener.fail_next = True
    await played.client.go(message_event(e2e.Message(conversation="lost to a bug"), message_id="A"))
    await played.client.go(message_event(e2e.Message(conversation="still here"), message_id="B"))
    events = await played.reported("event", 2)
    assert events[1][0].text == "still here"


async def test_sends_become_neonize_messages(played: Harness) -> None:
    await played.open()
    sent = await played.session.send(SendText(to="4915112345678", text="hi", reply_to="3EB0Q"))
    assert sent.message_id == "3EB0SENT00000000000001"
    assert sent.chat == "4915112345678@s.whatsapp.net"
    assert sent.timestamp == datetime.fromtimestamp(1_772_366_400, UTC)
    to, message = played.client.sent[0]
    assert (to.User, to.Server) == ("4915112345678", "s.whatsapp.net")
    assert message.extendedTextMessage.contextInfo.stanzaID == "3EB0Q"
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
        "RU5ErkJggg=="
    )
    await played.session.send(SendImage(type="image", to="120363000000000001@g.us", base64=png))
    uploaded, _ = played.client.uploads[0]
    assert uploaded.startswith(b"\x89PNG")
    to, message = played.client.sent[1]
    assert to.Server == "g.us"
    assert message.imageMessage.mimetype == "image/png"
    assert message.imageMessage.fileLength == len(uploaded)


async def test_dropped_connection_is_left_to_whatsmeows_own_reconnect(played: Harness) -> None:
    await played.open()
    await played.client.go(nz.Disconnected(status=True))
    closes = await played.reported("close")
    assert closes[0][0] is DisconnectReason.NETWORK
    assert played.session.running
    assert not played.client.stopped
    await played.session.connect()  # the supervisor's retry: nothing new is started
    assert len(played.clients) == 1
    await played.client.go(nz.Connected(status=True))
    await played.reported("open", 2)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (nz.LoggedOut(OnConnect=False, Reason=2), DisconnectReason.LOGGED_OUT),
        (nz.StreamReplaced(), DisconnectReason.STREAM_REPLACED),
        (nz.TemporaryBan(Code=1, Expire=60), DisconnectReason.TEMPORARY_BAN),
    ],
)
async def test_ending_events_stop_the_client_for_a_fresh_connect(
    played: Harness, event: Any, reason: DisconnectReason
) -> None:
    await played.open()
    await played.client.go(event)
    closes = await played.reported("close")
    assert closes[0][0] is reason
    assert played.client.stopped
    assert not played.session.running


async def test_connection_task_ending_later_is_reported(played: Harness) -> None:
    await played.open()
    played.client.end("failed to dial whatsapp web websocket: i/o timeout")
    closes = await played.reported("close")
    assert closes[0][0] is DisconnectReason.NETWORK


async def test_logout_unlinks_and_reports_logged_out(played: Harness) -> None:
    await played.open()
    await played.session.logout()
    assert played.client.logged_out
    assert played.client.stopped
    assert played.listener.of("close") == [(DisconnectReason.LOGGED_OUT, "logged out on request")]


async def test_a_known_device_is_resumed_by_jid_and_recorded_on_login(played: Harness) -> None:
    played.store.devices["played"] = "15550009999:12@s.whatsapp.net"
    await played.open()
    client = played.client
    assert (client.jid.User, client.jid.Device, client.jid.Server) == (OWN, 12, "s.whatsapp.net")
    assert not client.new_device
    assert client.uuid.startswith(b"wabus-played-")  # the session names it, not the phone
    assert played.store.told == [("played", f"{OWN}:12@s.whatsapp.net")]
    await played.client.go(nz.LoggedOut(OnConnect=False, Reason=2))
    await played.reported("close")
    assert played.store.told[-1] == ("played", None)


async def test_an_unknown_instance_pairs_a_new_device(played: Harness) -> None:
    await played.open()
    assert played.client.new_device
    assert played.client.jid is None


async def test_pairing_by_phone_needs_a_socket_waiting_for_a_scan(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    session = NeonizeSession(
        "pairing", harness.listener, harness.store, pair_timeout=0.2, client_factory=harness._client
    )
    connecting = asyncio.create_task(session.connect())
    await eventually(harness._has_client, timeout=5.0)
    with pytest.raises(SendError) as no_qr:
        await session.pair_phone("4915112345678")  # connected, but WhatsApp offered no QR yet
    assert (no_qr.value.code, no_qr.value.retryable) == ("not_connected", True)
    await harness.client.go(device())
    await harness.client.go(nz.Connected(status=True))
    await connecting
    await harness.reported("open")
    with pytest.raises(SendError) as paired:
        await session.pair_phone("4915112345678")
    assert paired.value.code == "already_paired"
    await session.close()


async def test_commands_on_a_session_that_is_not_connected_are_refused(tmp_path: Path) -> None:
    session = NeonizeEngine(SqliteStore(tmp_path)).open_session("idle", Recorder())
    for command in (session.logout(), session.send(SendText(to="4915112345678", text="x"))):
        with pytest.raises(SendError) as refused:
            await command
        assert (refused.value.code, refused.value.retryable) == ("not_connected", True)


def test_the_neonize_internals_the_adapter_relies_on_are_there() -> None:
    """The adapter reaches into neonize 0.5.2 in two places; an upgrade must fail here first."""
    assert callable(getattr(NewAClient, "_NewAClient__onLoginStatus", None))
    client = NeonizeClient("unused.sqlite3", "wabus-internals-check")
    assert not client._stop_finalizer.alive  # garbage collection never calls Go's Stop


def test_importing_neonize_keeps_wabus_logging() -> None:
    script = (
        "import logging\n"
        "from wabus.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "before = list(logging.getLogger().handlers)\n"
        "import connector.engines.neonize\n"
        "root = logging.getLogger()\n"
        "assert root.handlers == before, root.handlers\n"
        "assert root.level == logging.INFO\n"
        "assert logging.getLogger('whatsmeow').level == logging.WARNING\n"
        "assert logging.getLogger('neonize.utils.log').level == logging.WARNING\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
    assert done.stderr == ""  # nothing printed at import


def test_the_service_builds_the_neonize_engine_for_its_store(tmp_path: Path) -> None:
    on_files = build_engine(Settings(engine="neonize", data_dir=tmp_path, database_url=None))
    assert isinstance(on_files, NeonizeEngine)
    assert isinstance(on_files.store, SqliteStore)
    assert on_files.store.folder == tmp_path / "neonize"
    shared = build_engine(
        Settings(engine="neonize", data_dir=tmp_path, database_url="postgresql://db/app")
    )
    assert isinstance(shared, NeonizeEngine)
    assert isinstance(shared.store, PostgresStore)


async def test_group_reads_need_the_sender(played: Harness) -> None:
    await played.open()
    with pytest.raises(SendError) as refused:
        await played.session.mark_read(MarkRead(chat="120363000000000001@g.us", message_ids=["A"]))
    assert (refused.value.code, refused.value.retryable) == ("sender_required", False)


async def test_a_run_left_in_the_qr_phase_is_stopped_only_once_that_is_safe(
    played: Harness,
) -> None:
    connecting = asyncio.create_task(played.session.connect())
    await eventually(played._has_client, timeout=5.0)
    await played.client.go_qr("2@waiting,code")
    await connecting
    await played.session.disconnect()
    assert played.listener.of("close") == [(DisconnectReason.STOPPED, "disconnected by wabus")]
    assert not played.client.stopped  # Go is in its QR loop: Stop now would crash it later
    await played.client.go(device())  # Go reached its event loop: now Stop is safe

    async def stopped() -> bool:
        return played.client.stopped

    await eventually(stopped, timeout=5.0)


async def test_disconnect_stops_a_logged_in_client_at_once(played: Harness) -> None:
    await played.open()
    await played.session.disconnect()
    assert played.client.stopped
    assert played.listener.of("close") == [(DisconnectReason.STOPPED, "disconnected by wabus")]
