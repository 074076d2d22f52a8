"""RotateKeys: re-wrap every data key not under the active KEK version, online.

Each credential is read, re-wrapped (`Vault.rewrap`) and written back only if nobody wrote it
since it was read (its row version); a credential refreshed meanwhile was sealed under the active
version already, and one that changed otherwise is read again (a few times). Readers are never
blocked: a row holds either its old or its new wrap, each complete, and the old KEK stays
configured until the rotation reports nothing remaining.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from integration_service.domain.errors import CredentialCorrupt
from integration_service.domain.model import Actor
from integration_service.store import credentials as store
from integration_service.usecases.vault import Vault
from meshkit.db import Database

logger = logging.getLogger(__name__)
BATCH = 100
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Rotation:
    kek_version: str
    rewrapped: int
    already_current: int
    remaining: int


class RotationCases:
    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault

    async def rotate(self, actor: Actor) -> Rotation:
        active = self._vault.keys.active_version
        rewrapped = 0
        skipped: set[object] = set()
        while True:
            async with self._db.acquire() as conn:
                batch = [
                    s
                    for s in await store.not_under(conn, active, limit=BATCH + len(skipped))
                    if s.connection_id not in skipped
                ]
            if not batch:
                break
            for sealed in batch:
                current = sealed
                for _ in range(ATTEMPTS):
                    try:
                        renewed = await self._vault.rewrap(current)
                    except CredentialCorrupt:
                        logger.error(
                            "a credential does not open under its key version",
                            extra={"connection_id": str(current.connection_id)},
                        )
                        skipped.add(current.connection_id)
                        break
                    async with self._db.acquire() as conn:
                        if await store.rewrap(conn, renewed, read_version=current.version):
                            rewrapped += 1
                            break
                        fresh = await store.get(conn, current.connection_id)
                    if fresh is None or fresh.kek_version == active:
                        break  # destroyed, or re-sealed under the active version meanwhile
                    current = fresh
                else:
                    skipped.add(current.connection_id)
        async with self._db.acquire() as conn:
            current_count = await store.count_under(conn, active)
            left = await store.not_under(conn, active, limit=1_000_000)
        logger.info(
            "key rotation",
            extra={
                "kek_version": active,
                "rewrapped": rewrapped,
                "remaining": len(left),
                "actor": actor.subject,
            },
        )
        return Rotation(active, rewrapped, current_count - rewrapped, len(left))
