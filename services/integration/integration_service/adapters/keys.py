"""Key-encryption keys (KEKs) that wrap the vault's per-credential data keys.

* `LocalKeys`: AES-256-GCM under local keys (from settings, or a file generated under DEV_DIR);
  dev and test only (production settings refuse the local backend).
* `KmsKeys`: AWS KMS through boto3 — `GenerateDataKey` (AES_256) for a new credential, `Encrypt`
  to re-wrap under another version, `Decrypt` to open; every call bound to an encryption context
  (the connection, its provider and the KEK version), so a wrapped key moved to another
  connection or version does not open. boto3 is synchronous: its calls run in a worker thread
  (`asyncio.to_thread`) behind the `kms` guard, so the event loop never blocks on KMS.

Both answer `CredentialCorrupt` for a wrapped key that does not open under its version and
`CredentialUnavailable` when the keys cannot be reached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from integration_service.domain import sealing
from integration_service.domain.errors import CredentialCorrupt, CredentialUnavailable
from meshkit.files import create_once
from meshkit.resilience import ProviderGuard


class KeyWrapper(Protocol):
    """What the vault needs of its KEKs."""

    @property
    def active_version(self) -> str: ...

    def has(self, version: str) -> bool: ...

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        """(plaintext data key, wrapped under the active version)."""
        ...

    async def wrap(self, version: str, data_key: bytes, context: Mapping[str, str]) -> bytes: ...

    async def unwrap(self, version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes: ...


def _active(versions: Mapping[str, object], active: str) -> str:
    if not versions:
        raise ValueError("no key-encryption key versions")
    return active or list(versions)[-1]


class LocalKeys:
    """Local KEKs: {version: 32-byte key}."""

    def __init__(self, keys: Mapping[str, bytes], active: str = "") -> None:
        for version, key in keys.items():
            if len(key) != sealing.KEY_BYTES:
                raise ValueError(f"local KEK {version} is not 32 bytes")
        self._keys = dict(keys)
        self._active = _active(self._keys, active)

    @classmethod
    def from_refs(cls, refs: Mapping[str, str], active: str = "") -> LocalKeys:
        keys: dict[str, bytes] = {}
        for version, ref in refs.items():
            try:
                keys[version] = base64.b64decode(ref, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"local KEK {version} is not base64") from None
        return cls(keys, active)

    @classmethod
    def dev(cls, path: Path) -> LocalKeys:
        """One local key kept in a file (created with mode 0600 on first use).

        Processes starting at once on a fresh dev directory race to create it
        (`meshkit.files.create_once`): one key wins, nobody reads it half-written."""
        if not path.exists():
            create_once(path, base64.b64encode(secrets.token_bytes(sealing.KEY_BYTES)))
        return cls.from_refs({"dev-1": path.read_text().strip()})

    @property
    def active_version(self) -> str:
        return self._active

    def has(self, version: str) -> bool:
        return version in self._keys

    def _key(self, version: str) -> bytes:
        try:
            return self._keys[version]
        except KeyError:
            raise CredentialUnavailable(f"key-encryption key {version} is not configured") from None

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        data_key = sealing.new_data_key()
        return data_key, await self.wrap(self._active, data_key, context)

    async def wrap(self, version: str, data_key: bytes, context: Mapping[str, str]) -> bytes:
        return sealing.wrap_with(
            self._key(version), data_key, sealing.context_bytes(dict(context), version)
        )

    async def unwrap(self, version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        return sealing.unwrap_with(
            self._key(version), wrapped, sealing.context_bytes(dict(context), version)
        )


_NOT_OPENING = {
    "InvalidCiphertextException",
    "IncorrectKeyException",
    "InvalidKeyUsageException",
}


class KmsKeys:
    """AWS KMS KEKs: {version: key id / ARN / alias}."""

    def __init__(
        self,
        refs: Mapping[str, str],
        guard: ProviderGuard,
        *,
        active: str = "",
        endpoint_url: str = "",
        region: str = "us-east-1",
        timeout_s: float = 10.0,
        client: Any = None,
    ) -> None:
        self._refs = dict(refs)
        self._active = _active(self._refs, active)
        self._guard = guard
        self._client = client or boto3.client(
            "kms",
            endpoint_url=endpoint_url or None,
            region_name=region,
            config=Config(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 1, "mode": "standard"},  # the guard retries
            ),
        )

    @property
    def active_version(self) -> str:
        return self._active

    def has(self, version: str) -> bool:
        return version in self._refs

    def _ref(self, version: str) -> str:
        try:
            return self._refs[version]
        except KeyError:
            raise CredentialUnavailable(f"key-encryption key {version} is not configured") from None

    @staticmethod
    def _context(context: Mapping[str, str], version: str) -> dict[str, str]:
        return {**context, "kek_version": version}

    async def _call(self, operation: str, fn: Any, **kwargs: Any) -> Any:
        async def attempt() -> Any:
            return await asyncio.to_thread(fn, **kwargs)

        try:
            return await self._guard.call(operation, attempt, idempotent=True)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_OPENING:
                raise CredentialCorrupt(f"KMS refused to open a data key ({code})") from None
            raise CredentialUnavailable(f"KMS answered {code or 'an error'}") from None
        except BotoCoreError as exc:
            raise CredentialUnavailable(type(exc).__name__) from None

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        answer = await self._call(
            "kms.generate_data_key",
            self._client.generate_data_key,
            KeyId=self._ref(self._active),
            KeySpec="AES_256",
            EncryptionContext=self._context(context, self._active),
        )
        return bytes(answer["Plaintext"]), bytes(answer["CiphertextBlob"])

    async def wrap(self, version: str, data_key: bytes, context: Mapping[str, str]) -> bytes:
        answer = await self._call(
            "kms.encrypt",
            self._client.encrypt,
            KeyId=self._ref(version),
            Plaintext=data_key,
            EncryptionContext=self._context(context, version),
        )
        return bytes(answer["CiphertextBlob"])

    async def unwrap(self, version: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        answer = await self._call(
            "kms.decrypt",
            self._client.decrypt,
            KeyId=self._ref(version),
            CiphertextBlob=wrapped,
            EncryptionContext=self._context(context, version),
        )
        return bytes(answer["Plaintext"])
