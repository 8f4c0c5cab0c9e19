"""One `wabus dev` per data folder.

Two stacks on one folder would run two nats-servers on one JetStream store and overwrite each
other's `dev.json`. The running one holds an exclusive `flock` on `<data dir>/dev.lock` for its
whole life: the kernel releases it however the process ends, so a crash never leaves a stale
lock behind (a pid file would). The file's text names the holder, for the one refused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import IO

LOCK_FILE = "dev.lock"


class DevAlreadyRunning(Exception):
    """Another `wabus dev` holds the folder; `holder` is what it wrote about itself."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(
            f"wabus dev is already running in {data_dir} ({holder}): use that one, stop it "
            "(Ctrl-C in its terminal), or start this one in another folder (WABUS_DATA_DIR)"
        )
        self.holder = holder


class DevLock:
    """Held from `__enter__` to `__exit__`; `describe` replaces what the holder says of itself."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._file: IO[str] | None = None

    def __enter__(self) -> DevLock:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        file = (self._data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process, starting"
            file.close()
            raise DevAlreadyRunning(self._data_dir, holder) from None
        self._file = file
        self.describe(f"pid {os.getpid()}, starting")
        return self

    def describe(self, text: str) -> None:
        if self._file is None:
            raise RuntimeError("the dev lock is not held")
        self._file.seek(0)
        self._file.truncate()
        self._file.write(text + "\n")
        self._file.flush()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.truncate(0)  # the next holder starts from an empty description
            self._file.close()  # closing releases the lock
            self._file = None
