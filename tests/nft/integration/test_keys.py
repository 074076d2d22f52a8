"""Key material on disk: the dev payer key is generated once, private to its owner."""

from __future__ import annotations

from pathlib import Path

from nft_service.adapters.keys import ensure_dev_payer, parse_keypair


def test_dev_payer_is_generated_once_and_private(tmp_path: Path) -> None:
    path = ensure_dev_payer(tmp_path)
    assert path.stat().st_mode & 0o077 == 0  # not readable by others
    assert ensure_dev_payer(tmp_path) == path  # generated once
    assert parse_keypair(path.read_text(), source="file").pubkey()
