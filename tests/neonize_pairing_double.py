"""A pairing child whose WhatsApp side is scripted: the real `neonize_pairing.main` and host, with
a real `NeonizeClient` subclass whose connect plays the script through neonize's own dispatch
(QR and login-status callbacks, `Event.execute`, called from threads as Go calls them).

Run as `python -m tests.neonize_pairing_double '<script json>' [config dump path]`. Steps:
`["qr", code]`, `["login_status", status]`, `["device"]`, `["connected"]`,
`["event", "TemporaryBan", {fields}]`, `["await_pair_phone"]`, `["end", error or null]`; after the
last step the run lasts until it is stopped (or the process killed).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import sys
from pathlib import Path
from typing import Any

from connector.engines.neonize_lib import EVENT_TO_INT, NeonizeClient, NeonizeError, nz
from connector.engines.neonize_pairing import main
from tests.neonize_protos import device

SCRIPT: list[list[Any]] = []
CONFIG_DUMP: Path | None = None


class ScriptedWhatsApp(NeonizeClient):
    def __init__(self, name: str, uuid: str) -> None:
        super().__init__(name, uuid)
        self._pair_asked = asyncio.Event()
        self._stopped = asyncio.Event()
        if CONFIG_DUMP is not None:
            CONFIG_DUMP.write_text(json.dumps({"name": name, "uuid": uuid}))

    async def connect(self, proxy_settings: Any = None) -> asyncio.Task[None]:
        if CONFIG_DUMP is not None:
            written = json.loads(CONFIG_DUMP.read_text())
            CONFIG_DUMP.write_text(json.dumps({**written, "new_device": self.new_device}))
        task = self.connect_task = asyncio.get_running_loop().create_task(self._play())
        return task

    async def _play(self) -> None:
        for step in SCRIPT:
            match step:
                case ["qr", code]:
                    await self._callback(self._NewAClient__onQr, code)
                case ["login_status", status]:
                    await self._callback(self._NewAClient__onLoginStatus, status)
                case ["device"]:
                    await self._go(device())
                case ["connected"]:
                    await self._go(nz.Connected(status=True))
                case ["event", name, fields]:
                    await self._go(getattr(nz, name)(**fields))
                case ["await_pair_phone"]:
                    await self._pair_asked.wait()
                case ["end", error]:
                    if error:
                        raise NeonizeError(error)
                    return
        await self._stopped.wait()

    @staticmethod
    async def _callback(callback: Any, text: str) -> None:
        buffer = ctypes.create_string_buffer(text.encode())
        await asyncio.to_thread(callback, 0, ctypes.addressof(buffer))

    async def _go(self, event: Any) -> None:
        data = event.SerializeToString()
        buffer = ctypes.create_string_buffer(data, len(data))
        code = EVENT_TO_INT[type(event)]
        await asyncio.to_thread(self.event.execute, 0, ctypes.addressof(buffer), len(data), code)

    async def PairPhone(self, phone: str, show_push_notification: bool, **options: Any) -> str:
        self._pair_asked.set()
        if phone.startswith("0"):
            raise NeonizeError("international phone number required (must not start with 0)")
        return "ABCD-EFGH"

    async def stop(self) -> None:
        self._stopped.set()


if __name__ == "__main__":
    SCRIPT.extend(json.loads(sys.argv[1]))
    CONFIG_DUMP = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    main(client_factory=ScriptedWhatsApp)
