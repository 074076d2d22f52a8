"""meshkit.files.create_once: the first writer's content stays, with its mode, and no temp file."""

from __future__ import annotations

from pathlib import Path

from meshkit.files import create_once


def test_the_first_call_creates_and_later_ones_keep_it(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "key"
    assert create_once(path, b"first") is True
    assert create_once(path, b"second") is False
    assert path.read_bytes() == b"first"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key"]


def test_mode_is_the_callers(tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    assert create_once(path, b"pem", mode=0o644) is True
    assert path.stat().st_mode & 0o777 == 0o644
