"""Shared step: the credential vault — seal, open (audited), re-wrap.

Each seal draws a fresh data key (AES-256-GCM, `domain.sealing`) wrapped under the active KEK
version (`adapters.keys`); opening unwraps it under the version the row names, decrypts with the
associated data (connection id, provider, KEK version) and records who opened it, when and why.
The plaintext credential lives only in the caller's frame; `Secret` masks it in logs and errors.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg

from integration_service.adapters.keys import KeyWrapper
from integration_service.domain import sealing
from integration_service.domain.errors import ConnectionDisconnected
from integration_service.domain.model import Actor, Credential
from integration_service.domain.sealing import Sealed
from integration_service.store import credentials as store
from integration_service.usecases.metrics import IntegrationMetrics

logger = logging.getLogger(__name__)


class Vault:
    def __init__(self, keys: KeyWrapper, metrics: IntegrationMetrics | None = None) -> None:
        self.keys = keys
        self._metrics = metrics

    async def seal(self, connection_id: uuid.UUID, provider: str, credential: Credential) -> Sealed:
        context = sealing.key_context(connection_id, provider)
        version = self.keys.active_version
        data_key, wrapped = await self.keys.new_data_key(context)
        aad = sealing.associated_data(connection_id, provider, version)
        nonce, ciphertext = sealing.encrypt(data_key, sealing.serialize(credential), aad)
        return Sealed(connection_id, provider, version, wrapped, nonce, ciphertext)

    async def open_sealed(self, sealed: Sealed) -> Credential:
        context = sealing.key_context(sealed.connection_id, sealed.provider)
        data_key = await self.keys.unwrap(sealed.kek_version, sealed.wrapped_key, context)
        return sealing.deserialize(
            sealing.decrypt(data_key, sealed.nonce, sealed.ciphertext, sealed.aad)
        )

    async def open(
        self, conn: asyncpg.Connection, connection_id: uuid.UUID, actor: Actor, purpose: str
    ) -> tuple[Sealed, Credential]:
        """Read and open a connection's credential, recording the use (who, when, why)."""
        sealed = await store.get(conn, connection_id)
        if sealed is None:
            raise ConnectionDisconnected()
        credential = await self.open_sealed(sealed)
        await store.audit(conn, connection_id, actor.subject, actor.request_id, purpose)
        if self._metrics is not None:
            self._metrics.opens.labels(purpose).inc()
        logger.info(
            "credential opened",
            extra={"connection_id": str(connection_id), "actor": actor.subject, "purpose": purpose},
        )
        return sealed, credential

    async def rewrap(self, sealed: Sealed) -> Sealed:
        """The same credential under the active KEK version (a new wrap of the same data key;
        the ciphertext is re-sealed because its associated data names the version)."""
        version = self.keys.active_version
        context = sealing.key_context(sealed.connection_id, sealed.provider)
        data_key = await self.keys.unwrap(sealed.kek_version, sealed.wrapped_key, context)
        plaintext = sealing.decrypt(data_key, sealed.nonce, sealed.ciphertext, sealed.aad)
        wrapped = await self.keys.wrap(version, data_key, context)
        aad = sealing.associated_data(sealed.connection_id, sealed.provider, version)
        nonce, ciphertext = sealing.encrypt(data_key, plaintext, aad)
        return Sealed(
            sealed.connection_id,
            sealed.provider,
            version,
            wrapped,
            nonce,
            ciphertext,
            sealed.version,
            sealed.fence,
        )
