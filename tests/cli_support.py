"""The `wabus` command as a new user runs it: a real process, a clean environment, its output in a
file; `wabus dev` in a process group of its own, so that a test can press Ctrl-C the way a
terminal does (SIGINT to the whole foreground group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from connector.service import SPOOL_FILE
from connector.spool import Spool
from wabus.embedded import free_port

WABUS = str(Path(sys.executable).parent / "wabus")
BANNER = "wabus dev is running"


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without any WABUS_* or NATS_* variable, the data folder set."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WABUS_", "NATS_"))},
        "WABUS_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def run_wabus(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """One short command to its end (the timeout only stops a hung one)."""
    return subprocess.run(
        [WABUS, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def wabus_process(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running `wabus …` (its output in `log`), leader of its own process group; still
    running on the way out, it is interrupted like Ctrl-C, then killed."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [WABUS, *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            press_ctrl_c(process)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def press_ctrl_c(process: subprocess.Popen[bytes]) -> None:
    """What a terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
    os.killpg(process.pid, signal.SIGINT)


def wait_for_text(log: Path, text: str, timeout: float = 60) -> str:
    """The log once it holds `text`; fails with its end when it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        shown = log.read_text() if log.exists() else ""
        if text in shown:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{text!r} not shown within {timeout}s; the output ends:\n" + shown[-3000:]
            )
        time.sleep(0.1)


def dev_options() -> list[str]:
    """Free ports for every listener of `wabus dev`."""
    ports = [str(free_port()) for _ in range(4)]
    return [
        "--relay-port", ports[0], "--connector-port", ports[1],
        "--inspector-port", ports[2], "--nats-port", ports[3],
    ]  # fmt: skip


@dataclass(frozen=True)
class DevStack:
    env: dict[str, str]
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]


@contextmanager
def dev_stack(folder: Path, **extra_env: str) -> Iterator[DevStack]:
    """`wabus dev` in `folder`, once its banner is out."""
    data_dir = folder / ".wabus"
    env = clean_env(data_dir, **extra_env)
    log = folder / "dev.log"
    with wabus_process(["dev", *dev_options()], env, log) as process:
        wait_for_text(log, BANNER)
        yield DevStack(env, data_dir, log, process)


def spool_depth(data_dir: Path) -> int:
    """How many events the connector's spool in `data_dir` holds (0 without a spool)."""
    path = data_dir / SPOOL_FILE
    if not path.exists():
        return 0
    spool = Spool(path, max_events=1)
    try:
        return len(spool)
    finally:
        spool.close()
