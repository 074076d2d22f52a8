"""Files several processes may create at once (dev keys on a fresh `.dev/`)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def create_once(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create `path` holding `data` unless it exists; True when this call created it.

    Processes racing to create the same file each write a whole copy to a private temporary file
    and hard-link it into place: the link succeeds for exactly one of them, so nobody reads a
    half-written file or fails on another's (the losers' copies are dropped)."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
            return True
        return False
    finally:
        tmp.unlink()
