"""ConnectWithApiKey, GetConnection, ListConnections, TestConnection and Disconnect.

A venue admin sees and changes only the connections of the venues in their token; an admin
every connection (a connection the caller may not see is "not found"). An API key is checked
with the provider (one cheap call) before it is sealed and stored; it is never returned, only
its last four characters as a hint. Disconnect revokes the grant at the provider where the
provider has revocation (asked for, and best effort: a provider failure does not keep the
credentials alive) and destroys the data key (crypto-shredding): nothing can open the
credential afterwards.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from integration_service.adapters.base import ApiKeyAdapter, OAuthAdapter
from integration_service.domain import catalog
from integration_service.domain.errors import (
    ApiKeyRefused,
    ConnectionNotFound,
    GrantRefused,
    InvalidInput,
    NeedsReauth,
    ProviderRejected,
    VenueNotManaged,
    Violation,
    WrongAuthType,
)
from integration_service.domain.model import (
    Actor,
    AuthKind,
    Connection,
    ConnectionFilter,
    ConnectionStatus,
    Credential,
    Provider,
    Secret,
    mask_hint,
)
from integration_service.store import connections as connections_store
from integration_service.store import credentials as credentials_store
from integration_service.usecases.states import ConnectionStates
from integration_service.usecases.tokens import TokenKeeper
from integration_service.usecases.vault import Vault
from meshkit.db import Database

logger = logging.getLogger(__name__)

WEBHOOK_SECRET_SETTING = "webhook_secret"  # noqa: S105 - a settings key, not a secret
"""ConnectWithApiKey settings key for Stripe's endpoint signing secret (moved into the vault)."""


@dataclass(frozen=True, slots=True)
class TestResult:
    ok: bool
    latency_ms: int
    error_code: str
    error_message: str
    connection: Connection


class ConnectionCases:
    def __init__(
        self,
        *,
        db: Database,
        vault: Vault,
        tokens: TokenKeeper,
        states: ConnectionStates,
        oauth_adapters: Mapping[Provider, OAuthAdapter],
        key_adapters: Mapping[Provider, ApiKeyAdapter],
        allow_test_keys: bool,
    ) -> None:
        self._db = db
        self._vault = vault
        self._tokens = tokens
        self._states = states
        self._oauth = oauth_adapters
        self._keys = key_adapters
        self._allow_test_keys = allow_test_keys

    def _adapter(self, provider: Provider) -> OAuthAdapter | ApiKeyAdapter:
        adapter = self._oauth.get(provider) or self._keys.get(provider)
        assert adapter is not None, provider
        return adapter

    async def get(self, actor: Actor, connection_id: uuid.UUID) -> Connection:
        async with self._db.acquire() as conn:
            found = await connections_store.get(conn, connection_id)
        if found is None or not actor.manages(found.venue_id):
            raise ConnectionNotFound()
        return found

    async def find(
        self,
        actor: Actor,
        flt: ConnectionFilter,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[Connection]:
        if not actor.admin:
            if not flt.venue_ids:
                flt = replace(flt, venue_ids=tuple(sorted(actor.venue_ids)))
            for venue in flt.venue_ids:
                if venue not in actor.venue_ids:
                    raise VenueNotManaged(venue)
            if not flt.venue_ids:
                return []
        async with self._db.acquire() as conn:
            return await connections_store.find(conn, flt, limit=limit, after=after)

    async def connect_api_key(
        self,
        actor: Actor,
        *,
        venue_id: str,
        provider: Provider,
        api_key: Secret,
        settings: Mapping[str, str],
    ) -> Connection:
        if not actor.manages(venue_id):
            raise VenueNotManaged(venue_id)
        if catalog.spec(provider).auth_kind is not AuthKind.API_KEY:
            raise WrongAuthType(provider.value, "OAuth (StartOAuth)")
        key = api_key.reveal()
        if provider is Provider.STRIPE:
            if not key.startswith("rk_"):
                raise ApiKeyRefused("use a restricted key (rk_...), not a secret key")
            if key.startswith("rk_test_") and not self._allow_test_keys:
                raise ApiKeyRefused("a test-mode key; this deployment takes live keys only")
        plain_settings = {k: v for k, v in settings.items() if k != WEBHOOK_SECRET_SETTING}
        hook_secret = settings.get(WEBHOOK_SECRET_SETTING, "")
        if hook_secret and not hook_secret.startswith("whsec_"):
            raise InvalidInput(
                [Violation(f'settings["{WEBHOOK_SECRET_SETTING}"]', "not a whsec_ secret")]
            )
        adapter = self._keys[provider]
        account = await adapter.check_key(key)
        credential = Credential(
            kind=AuthKind.API_KEY, api_key=api_key, webhook_secret=Secret(hook_secret)
        )
        async with self._db.transaction() as conn:
            existing = await connections_store.find_live(
                conn, venue_id, provider, account.account_id
            )
            connection_id = existing.id if existing else uuid.uuid4()
            sealed = await self._vault.seal(connection_id, provider.value, credential)
            if existing is None:
                connection = await connections_store.insert(
                    conn,
                    connection_id=connection_id,
                    venue_id=venue_id,
                    provider=provider,
                    auth_kind=AuthKind.API_KEY,
                    scopes=(),
                    account_id=account.account_id,
                    account_name=account.account_name,
                    credential_hint=mask_hint(key),
                    api_base="",
                    settings=plain_settings,
                    webhook_secret_digest=None,
                    token_expires_at=None,
                    refresh_expires_at=None,
                    refresh_due_at=None,
                    created_by=actor.subject,
                )
                await credentials_store.put(conn, sealed)
            else:
                await credentials_store.put(conn, sealed)
                connection = await connections_store.reconnect(
                    conn,
                    existing.id,
                    scopes=(),
                    account_name=account.account_name,
                    credential_hint=mask_hint(key),
                    api_base="",
                    token_expires_at=None,
                    refresh_expires_at=None,
                    refresh_due_at=None,
                )
                connection = await self._states.recover(conn, connection, recovered_by="api_key")
        return connection

    async def test(self, actor: Actor, connection_id: uuid.UUID) -> TestResult:
        connection = await self.get(actor, connection_id)
        if connection.status is ConnectionStatus.DISCONNECTED:
            return TestResult(
                False, 0, "disconnected", "the connection is disconnected", connection
            )
        started = time.perf_counter()
        try:
            adapter = self._adapter(connection.provider)
            connection, _ = await self._tokens.call(
                connection, actor, "test_connection", adapter.test
            )
        except NeedsReauth as exc:
            latency = int((time.perf_counter() - started) * 1000)
            current = await self.get(actor, connection_id)
            return TestResult(
                False, latency, current.last_error_code or "needs_reauth", exc.message, current
            )
        except GrantRefused as refused:
            latency = int((time.perf_counter() - started) * 1000)
            async with self._db.transaction() as conn:
                await self._states.fail(
                    conn,
                    connection_id,
                    ConnectionStatus.NEEDS_REAUTH,
                    code=refused.code,
                    message=refused.detail or "the provider refused the credentials",
                    detected_by="test_connection",
                    tested=True,
                )
                after = await connections_store.get(conn, connection_id)
            assert after is not None
            return TestResult(False, latency, refused.code, refused.detail, after)
        except ProviderRejected as rejected:
            latency = int((time.perf_counter() - started) * 1000)
            async with self._db.transaction() as conn:
                await self._states.fail(
                    conn,
                    connection_id,
                    ConnectionStatus.ERROR,
                    code=rejected.code,
                    message=rejected.detail,
                    detected_by="test_connection",
                    tested=True,
                )
                after = await connections_store.get(conn, connection_id)
            assert after is not None
            return TestResult(False, latency, rejected.code, rejected.detail, after)
        latency = int((time.perf_counter() - started) * 1000)
        async with self._db.transaction() as conn:
            current = await connections_store.touch_tested(conn, connection_id)
            current = await self._states.recover(
                conn, current, recovered_by="test_connection", tested=True
            )
        return TestResult(True, latency, "", "", current)

    async def disconnect(
        self, actor: Actor, connection_id: uuid.UUID, *, revoke: bool
    ) -> Connection:
        connection = await self.get(actor, connection_id)
        if connection.status is ConnectionStatus.DISCONNECTED:
            return connection
        if revoke:
            try:
                async with self._db.acquire() as conn:
                    _, credential = await self._vault.open(
                        conn, connection_id, actor, "disconnect_revoke"
                    )
                await self._adapter(connection.provider).revoke(connection, credential)
            except Exception:  # best effort: the data key is destroyed either way
                logger.warning(
                    "revocation at the provider failed",
                    extra={"connection_id": str(connection_id)},
                    exc_info=True,
                )
        async with self._db.transaction() as conn:
            await credentials_store.destroy(conn, connection_id)
            changed = await connections_store.set_status(
                conn,
                connection_id,
                ConnectionStatus.DISCONNECTED,
                from_statuses=[
                    ConnectionStatus.CONNECTED,
                    ConnectionStatus.NEEDS_REAUTH,
                    ConnectionStatus.ERROR,
                ],
            )
            current = changed or await connections_store.get(conn, connection_id)
        assert current is not None
        return current
