"""The service's secrets: the payer/authority keypair and the derivation secret.

The payer key signs every transaction and is the mint's update authority, freeze authority and
permanent delegate. It comes from settings (env or file, base58 or the solana-keygen JSON byte
array); in dev/test a key is generated once under DEV_DIR. Error messages never contain key
material.

The derivation secret turns (payment, ticket) into a mint address seed and a buyer id into a
custodial wallet, deterministically: a retry targets the same mint account, and the same buyer
always gets the same custodial wallet, whose secret key exists only inside this process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from meshkit.settings import SettingsError
from nft_service.settings import NftSettings

SEED_LENGTH = 32  # characters; the maximum `create_with_seed` accepts


def parse_keypair(text: str, *, source: str) -> Keypair:
    """A keypair from base58 (64-byte secret or 32-byte seed) or a JSON byte array."""
    text = text.strip()
    try:
        if text.startswith("["):
            raw = bytes(json.loads(text))
            if len(raw) == 64:
                keypair = Keypair.from_bytes(raw)
            elif len(raw) == 32:
                keypair = Keypair.from_seed(raw)
            else:
                raise ValueError("wrong length")
        elif len(text) > 50:
            keypair = Keypair.from_base58_string(text)  # 64-byte secret key
        else:
            # A 32-byte seed in base58 parses exactly like an address.
            keypair = Keypair.from_seed(bytes(Pubkey.from_string(text)))
    except Exception:
        # Deliberately no detail: the message must not echo any part of the secret.
        raise SettingsError(
            f"{source} is not a Solana keypair (base58 or JSON array of 64 bytes)"
        ) from None
    return keypair


def _write_once(path: Path, content: str) -> None:
    """Create `path` with mode 0600 unless it exists; race-free across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(content)
    tmp.chmod(0o600)
    try:
        os.link(tmp, path)  # fails if another process won the race: theirs is kept
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def ensure_dev_payer(dev_dir: Path) -> Path:
    """The dev payer key file (solana-keygen JSON format), generated on first use."""
    path = dev_dir / "nft" / "payer.json"
    _write_once(path, json.dumps(list(bytes(Keypair()))))
    return path


def ensure_dev_secret(dev_dir: Path) -> str:
    path = dev_dir / "nft" / "derivation.secret"
    _write_once(path, secrets.token_hex(32))
    return path.read_text().strip()


def load_payer(settings: NftSettings) -> Keypair:
    """The payer keypair from settings; a generated dev key outside production."""
    text = settings.nft_payer_key.get_secret_value()
    if text:
        return parse_keypair(text, source="NFT_PAYER_KEY")
    path = settings.nft_payer_key_file
    if not path:
        if settings.is_production:
            raise SettingsError("nft: NFT_PAYER_KEY or NFT_PAYER_KEY_FILE is required")
        path = str(ensure_dev_payer(settings.dev_dir))
    try:
        content = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"nft: cannot read NFT_PAYER_KEY_FILE ({exc.strerror})") from None
    return parse_keypair(content, source="NFT_PAYER_KEY_FILE")


def load_derivation_secret(settings: NftSettings) -> bytes:
    secret = settings.nft_derivation_secret.get_secret_value()
    if not secret:
        if settings.is_production:
            raise SettingsError("nft: NFT_DERIVATION_SECRET is required")
        secret = ensure_dev_secret(settings.dev_dir)
    return secret.encode()


@dataclass(frozen=True, slots=True)
class Derivation:
    """Deterministic addresses from the derivation secret (module docstring)."""

    secret: bytes

    def _mac(self, *parts: str) -> bytes:
        # NUL-separated so ("ab", "c") and ("a", "bc") never collide.
        message = "\x00".join(parts).encode()
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def mint_seed(self, payment_id: str, ticket_id: str) -> str:
        """32 hex characters: the `create_with_seed` seed of this ticket's mint account.

        Secret-derived rather than a plain hash so nobody can predict the address and squat on
        it (a lamport transfer to it would make our create fail) before our first send.
        """
        return self._mac("mint/v1", payment_id, ticket_id).hex()[:SEED_LENGTH]

    def custodial_keypair(self, buyer_id: str) -> Keypair:
        """The buyer's custodial wallet; its secret never leaves this process."""
        return Keypair.from_seed(self._mac("custody/v1", buyer_id))

    def custodial_address(self, buyer_id: str) -> Pubkey:
        return self.custodial_keypair(buyer_id).pubkey()
