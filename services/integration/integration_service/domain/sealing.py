"""Envelope encryption of one credential: AES-256-GCM under a data key of its own.

    sealed = seal(data_key, plaintext, associated_data(connection_id, provider, kek_version))

Every credential gets its own random 256-bit data key; the data key is stored only wrapped by a
key-encryption key (KEK: a local key in dev/test, AWS KMS in production; `adapters/keys.py`),
and the associated data binds the ciphertext to its connection, its provider and the KEK version
that wraps its data key — so a ciphertext moved to another connection, or paired with a data key
wrapped under another version, fails authentication instead of decrypting. One flipped bit
anywhere (nonce, ciphertext, tag, associated data, key) is refused (`CredentialCorrupt`).

Nonces are 96 random bits, fresh for every seal (a data key seals a handful of values over its
life, far below the 2^32 random-nonce bound for one key).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from integration_service.domain.errors import CredentialCorrupt
from integration_service.domain.model import Credential

KEY_BYTES = 32
NONCE_BYTES = 12
_AAD_LABEL = b"tickettoken.integration.credential.v1"
_WRAP_LABEL = b"tickettoken.integration.data-key.v1"


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def associated_data(connection_id: uuid.UUID, provider: str, kek_version: str) -> bytes:
    """What a credential's ciphertext is bound to (unambiguous: NUL-separated, ids carry none)."""
    return b"\x00".join(
        [_AAD_LABEL, str(connection_id).encode(), provider.encode(), kek_version.encode()]
    )


def key_context(connection_id: uuid.UUID, provider: str) -> dict[str, str]:
    """What a wrapped data key is bound to (the KMS encryption context; the local KEK's
    associated data)."""
    return {
        "purpose": "integration-credential",
        "connection_id": str(connection_id),
        "provider": provider,
    }


def context_bytes(context: dict[str, str], kek_version: str) -> bytes:
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
    return b"\x00".join([_WRAP_LABEL, canonical, kek_version.encode()])


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext with its 16-byte tag)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise CredentialCorrupt("the sealed value failed authentication") from exc


def wrap_with(kek: bytes, data_key: bytes, aad: bytes) -> bytes:
    """A data key wrapped by a local KEK: nonce || AES-256-GCM(data key)."""
    nonce, ciphertext = encrypt(kek, data_key, aad)
    return nonce + ciphertext


def unwrap_with(kek: bytes, wrapped: bytes, aad: bytes) -> bytes:
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16:
        raise CredentialCorrupt("a wrapped data key has the wrong length")
    return decrypt(kek, wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)


def serialize(credential: Credential) -> bytes:
    return json.dumps(credential.to_json(), separators=(",", ":")).encode()


def deserialize(plaintext: bytes) -> Credential:
    try:
        return Credential.from_json(json.loads(plaintext))
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialCorrupt("a sealed credential does not parse") from exc


@dataclass(frozen=True, slots=True)
class Sealed:
    """One stored credential: the wrapped data key, the KEK version that wraps it, and the
    AES-GCM nonce and ciphertext. `version` counts writes (every refresh and re-wrap); `fence`
    is the highest token-refresh fence the store has accepted."""

    connection_id: uuid.UUID
    provider: str
    kek_version: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    version: int = 0
    fence: int = 0

    @property
    def aad(self) -> bytes:
        return associated_data(self.connection_id, self.provider, self.kek_version)
