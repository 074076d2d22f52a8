"""Shared step: a connection's working credential, with its access token refreshed exactly once
across replicas.

Refresh is single-flight through Redis: a lock per connection whose value is a fencing token (a
counter that only grows, kept above the highest fence the store accepted), taken with SET NX PX.
The holder re-reads the connection after acquiring (another replica may have refreshed while
it waited), refreshes at the provider, and stores the new tokens with its fence: the store
accepts a write only with a fence above every fence it accepted before, so a holder whose lock
expired mid-refresh cannot overwrite a newer credential. The newest refresh token (QuickBooks
and Square PKCE rotate it on every refresh) is stored in the same write, atomically. Callers
that find the lock taken wait for it (polling the lock, then re-reading), up to the lock's
lifetime, and then answer TOKEN_REFRESH_IN_PROGRESS.

`invalid_grant` (any refusal of the grant) → NEEDS_REAUTH and `ConnectionFailed`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import redis.asyncio as aioredis

from integration_service.adapters.base import OAuthAdapter
from integration_service.domain import catalog, tokens
from integration_service.domain.errors import (
    ConnectionDisconnected,
    ConnectionNotFound,
    GrantRefused,
    NeedsReauth,
    RefreshBusy,
)
from integration_service.domain.model import (
    Actor,
    AuthKind,
    Connection,
    ConnectionStatus,
    Credential,
    Provider,
    TokenGrant,
)
from integration_service.store import connections as connections_store
from integration_service.store import credentials as credentials_store
from integration_service.usecases.metrics import IntegrationMetrics
from integration_service.usecases.states import ConnectionStates
from integration_service.usecases.vault import Vault
from meshkit.db import Database

logger = logging.getLogger(__name__)
T = TypeVar("T")

# KEYS[1] lock, KEYS[2] fence counter; ARGV[1] lock ms, ARGV[2] highest fence the store holds.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[2])
if fence <= floor then
  fence = floor + 1
  redis.call('SET', KEYS[2], fence)
end
redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
return fence
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class RefreshRules:
    timing: tokens.RefreshTiming
    lock_s: float


def lifetimes(
    provider: Provider, grant: TokenGrant, timing: tokens.RefreshTiming
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(access expiry, refresh expiry, when the proactive job refreshes)."""
    spec = catalog.spec(provider)
    refresh_expires = grant.refresh_expires_at
    if refresh_expires is None and grant.refresh_token and spec.refresh_token_lifetime_s:
        refresh_expires = datetime.now(UTC) + timedelta(seconds=spec.refresh_token_lifetime_s)
    due = tokens.refresh_due_at(grant.access_expires_at, refresh_expires, timing)
    return grant.access_expires_at, refresh_expires, due


class TokenKeeper:
    def __init__(
        self,
        *,
        db: Database,
        redis: aioredis.Redis,
        key_prefix: str,
        vault: Vault,
        adapters: Mapping[Provider, OAuthAdapter],
        states: ConnectionStates,
        rules: RefreshRules,
        metrics: IntegrationMetrics,
    ) -> None:
        self._db = db
        self._redis = redis
        self._prefix = key_prefix
        self._vault = vault
        self._adapters = adapters
        self._states = states
        self._rules = rules
        self._metrics = metrics
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, connection_id: uuid.UUID) -> tuple[str, str]:
        base = f"{self._prefix}:refresh:{connection_id}"
        return base + ":lock", base + ":fence"

    async def _read(self, connection_id: uuid.UUID) -> tuple[Connection, int]:
        async with self._db.acquire() as conn:
            connection = await connections_store.get(conn, connection_id)
            sealed = await credentials_store.get(conn, connection_id)
        if connection is None:
            raise ConnectionNotFound()
        if connection.status is ConnectionStatus.DISCONNECTED or sealed is None:
            raise ConnectionDisconnected()
        if connection.status is ConnectionStatus.NEEDS_REAUTH:
            raise NeedsReauth(connection.last_error_code)
        return connection, sealed.fence

    @staticmethod
    def expired(connection: Connection) -> bool:
        return connection.auth_kind is AuthKind.OAUTH2 and tokens.expired(
            datetime.now(UTC), connection.token_expires_at
        )

    def due(self, connection: Connection) -> bool:
        if connection.auth_kind is not AuthKind.OAUTH2:
            return False
        at = tokens.refresh_due_at(
            connection.token_expires_at, connection.refresh_expires_at, self._rules.timing
        )
        return at is not None and at <= datetime.now(UTC)

    async def credential(
        self, connection: Connection, actor: Actor, purpose: str
    ) -> tuple[Connection, Credential]:
        """The connection's credential, ready to call with (refreshed first if expired)."""
        if self.expired(connection):
            connection = await self.refresh(connection.id, actor, needed=self.expired)
        async with self._db.acquire() as conn:
            _, credential = await self._vault.open(conn, connection.id, actor, purpose)
        return connection, credential

    async def call(
        self,
        connection: Connection,
        actor: Actor,
        purpose: str,
        fn: Callable[[Connection, Credential], Awaitable[T]],
    ) -> tuple[Connection, T]:
        """`fn(connection, credential)` with a working credential. When the provider refuses an
        access token we still hold for valid (revoked early, clocks apart), the token is
        refreshed once — single-flight, and only if nobody refreshed it since — and `fn` tried
        again; a refused refresh makes the connection NEEDS_REAUTH (`NeedsReauth`)."""
        connection, credential = await self.credential(connection, actor, purpose)
        try:
            return connection, await fn(connection, credential)
        except GrantRefused:
            if connection.auth_kind is not AuthKind.OAUTH2 or not credential.refresh_token:
                raise
        used = connection.token_expires_at

        def unchanged(c: Connection) -> bool:
            return c.token_expires_at == used

        connection = await self.refresh(connection.id, actor, needed=unchanged)
        async with self._db.acquire() as conn:
            _, credential = await self._vault.open(conn, connection.id, actor, purpose)
        return connection, await fn(connection, credential)

    async def refresh(
        self,
        connection_id: uuid.UUID,
        actor: Actor,
        *,
        needed: Callable[[Connection], bool],
        force: bool = False,
    ) -> Connection:
        """Refresh once across replicas if `needed` (re-checked under the lock); the connection
        as it is afterwards."""
        deadline = time.monotonic() + self._rules.lock_s
        lock_key, fence_key = self._keys(connection_id)
        while True:
            connection, stored_fence = await self._read(connection_id)
            if not force and not needed(connection):
                return connection
            fence = int(
                await self._acquire(
                    keys=[lock_key, fence_key],
                    args=[int(self._rules.lock_s * 1000), stored_fence],
                )
            )
            if fence:
                try:
                    return await self._refresh_locked(connection_id, fence, actor, needed, force)
                finally:
                    await self._release(keys=[lock_key], args=[fence])
            # Another replica refreshes: wait for its lock to go, then read what it stored.
            while await self._redis.exists(lock_key):
                if time.monotonic() > deadline:
                    raise RefreshBusy()
                await asyncio.sleep(0.02 + random.uniform(0, 0.03))
            force = False

    async def _refresh_locked(
        self,
        connection_id: uuid.UUID,
        fence: int,
        actor: Actor,
        needed: Callable[[Connection], bool],
        force: bool,
    ) -> Connection:
        connection, _ = await self._read(connection_id)
        if not force and not needed(connection):
            return connection  # refreshed by another replica while we waited for the lock
        adapter = self._adapters[connection.provider]
        async with self._db.acquire() as conn:
            _, credential = await self._vault.open(conn, connection_id, actor, "token_refresh")
        outcomes = self._metrics.refreshes
        try:
            grant = await adapter.refresh(connection, credential)
        except GrantRefused as refused:
            outcomes.labels(connection.provider.value, "refused").inc()
            logger.warning(
                "token refresh refused by the provider",
                extra={"connection_id": str(connection_id), "code": refused.code},
            )
            async with self._db.transaction() as conn:
                if await credentials_store.fence_write(conn, connection_id, fence):
                    await self._states.fail(
                        conn,
                        connection_id,
                        ConnectionStatus.NEEDS_REAUTH,
                        code=refused.code,
                        message="the provider refused the refresh token; authorize again",
                        detected_by="token_refresh",
                    )
            raise NeedsReauth(refused.code) from None
        except Exception:
            outcomes.labels(connection.provider.value, "failed").inc()
            raise
        renewed = Credential(
            kind=credential.kind,
            access_token=grant.access_token,
            # The newest refresh token; providers that do not rotate answer the same or none.
            refresh_token=grant.refresh_token or credential.refresh_token,
            webhook_secret=credential.webhook_secret,
        )
        sealed = await self._vault.seal(connection_id, connection.provider.value, renewed)
        access, refresh_expires, due = lifetimes(connection.provider, grant, self._rules.timing)
        async with self._db.transaction() as conn:
            if not await credentials_store.put_fenced(conn, sealed, fence):
                logger.warning(
                    "refreshed tokens not stored: a newer fence was accepted",
                    extra={"connection_id": str(connection_id), "fence": fence},
                )
                stored = await connections_store.get(conn, connection_id)
                assert stored is not None
                outcomes.labels(connection.provider.value, "superseded").inc()
                return stored
            updated = await connections_store.tokens_refreshed(
                conn,
                connection_id,
                token_expires_at=access,
                refresh_expires_at=refresh_expires or connection.refresh_expires_at,
                refresh_due_at=due,
            )
            updated = await self._states.recover(conn, updated, recovered_by="token_refresh")
        outcomes.labels(connection.provider.value, "refreshed").inc()
        logger.info("token refreshed", extra={"connection_id": str(connection_id), "fence": fence})
        return updated

    async def refresh_due(self, *, limit: int = 100) -> int:
        """The proactive job: refresh every connection whose refresh is due; how many."""
        from integration_service.domain.model import SYSTEM

        async with self._db.acquire() as conn:
            ids = await connections_store.due_for_refresh(conn, limit=limit)
        done = 0
        for connection_id in ids:
            try:
                await self.refresh(connection_id, SYSTEM, needed=self.due)
                done += 1
            except (NeedsReauth, ConnectionDisconnected, ConnectionNotFound, RefreshBusy):
                continue
            except Exception:
                logger.exception(
                    "proactive refresh failed", extra={"connection_id": str(connection_id)}
                )
        return done
