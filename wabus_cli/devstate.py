"""`<data dir>/dev.json`: the credentials `wabus dev` generated and where its stack listens.

Kept so that they survive restarts and so that the other `wabus` commands (`send`, `tail`, `sim`)
find the running stack without configuration. The file is mode 0600, enforced on every read and
write. Secrets are never printed: what is shown is a fingerprint of each, and where the full value
is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

DEV_FILE = "dev.json"
DEV_FILE_MODE = 0o600

log = logging.getLogger(__name__)
"""Standard-library logging: its line reaches stderr even in CLI commands that configure no
logging (`wabus send` prints JSON on stdout), and goes through the structured renderer in
`wabus dev`."""


@dataclass
class DevState:
    api_key: str
    webhook_secret: str
    nats_url: str = ""
    relay_url: str = ""
    subject_prefix: str = "wa"


def load_dev_state(data_dir: Path) -> DevState | None:
    """The saved dev credentials, or None; a file others may read is made 0600 first."""
    path = data_dir / DEV_FILE
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if mode & 0o077:  # group or others may read or write it
        os.chmod(path, DEV_FILE_MODE)
        log.warning(
            "%s was mode %04o, now %04o: it holds the dev API key and webhook secret",
            path, mode, DEV_FILE_MODE,
        )  # fmt: skip
    return DevState(**json.loads(path.read_text()))


def save_dev_state(data_dir: Path, state: DevState) -> None:
    """Write the credentials to a new 0600 file that replaces the old one whole: never readable
    by others, never half-written, whatever mode an earlier file had."""
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{DEV_FILE}.")
    try:
        os.fchmod(descriptor, DEV_FILE_MODE)
        with os.fdopen(descriptor, "w") as file:
            file.write(json.dumps(asdict(state), indent=2))
        os.replace(temporary, data_dir / DEV_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fingerprint(secret: str) -> str:
    """A short SHA-256 of `secret`: enough to tell which secret is in use, useless to an
    onlooker (a terminal scroll-back, a screen share, a pasted log)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def shown_api_key(entry: str) -> str:
    """An `id:secret` entry of WABUS_API_KEYS as it may be printed: the id, not the secret."""
    head = entry.partition(":")[0]
    return f"{head}:…  ({fingerprint(entry)})"


def shown_secret(secret: str) -> str:
    """A webhook secret as it may be printed: its `whsec_` prefix and a fingerprint."""
    prefix = "whsec_" if secret.startswith("whsec_") else ""
    return f"{prefix}…  ({fingerprint(secret)})"
