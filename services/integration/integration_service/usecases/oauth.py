"""StartOAuth and CompleteOAuth (the RPCs and the HTTP callback).

StartOAuth stores a random single-use state bound to the venue, provider, redirect URI and caller
(with the PKCE verifier where the provider takes one) for the state TTL, and answers the
provider's authorization URL. CompleteOAuth refuses a state that is unknown (forged), expired,
used (a replay) or another venue's / caller's — before anything is exchanged or stored — then
consumes it atomically (one completion), exchanges the code, reads the account, seals the
tokens and stores the connection: a new one, or the venue's live connection to the same account
(authorized again: recovered if it had failed).
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from integration_service.adapters.base import OAuthAdapter
from integration_service.domain import catalog, oauth, webhooks
from integration_service.domain.errors import (
    InvalidInput,
    OAuthDenied,
    OAuthStateExpired,
    OAuthStateOtherCaller,
    OAuthStateUnknown,
    OAuthStateUsed,
    ProviderNotConfigured,
    RedirectNotAllowed,
    VenueNotManaged,
    Violation,
    WrongAuthType,
)
from integration_service.domain.model import (
    Actor,
    AuthKind,
    Connection,
    Credential,
    Provider,
    Secret,
)
from integration_service.store import connections as connections_store
from integration_service.store import credentials as credentials_store
from integration_service.store.oauth_states import OAuthStates
from integration_service.usecases.states import ConnectionStates
from integration_service.usecases.tokens import RefreshRules, lifetimes
from integration_service.usecases.vault import Vault
from meshkit.db import Database

_STATE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class Started:
    authorization_url: str
    state: str
    expires_at: datetime


class OAuthCases:
    def __init__(
        self,
        *,
        db: Database,
        states: OAuthStates,
        vault: Vault,
        adapters: Mapping[Provider, OAuthAdapter],
        connection_states: ConnectionStates,
        rules: RefreshRules,
        state_ttl_s: float,
        redirect_uris: Callable[[], Sequence[str]],
    ) -> None:
        self._db = db
        self._states = states
        self._vault = vault
        self._adapters = adapters
        self._connection_states = connection_states
        self._rules = rules
        self._ttl_s = state_ttl_s
        self._redirect_uris = redirect_uris

    def _adapter(self, provider: Provider) -> OAuthAdapter:
        spec = catalog.spec(provider)
        if spec.auth_kind is not AuthKind.OAUTH2:
            raise WrongAuthType(provider.value, "an API key (ConnectWithApiKey)")
        adapter = self._adapters.get(provider)
        if adapter is None:
            raise ProviderNotConfigured(provider.value)
        return adapter

    async def start(
        self,
        actor: Actor,
        *,
        venue_id: str,
        provider: Provider,
        redirect_uri: str,
        scopes: tuple[str, ...],
    ) -> Started:
        if not actor.manages(venue_id):
            raise VenueNotManaged(venue_id)
        spec = catalog.spec(provider)
        adapter = self._adapter(provider)
        if not oauth.redirect_allowed(redirect_uri, self._redirect_uris()):
            raise RedirectNotAllowed()
        chosen = spec.scopes_for(scopes)
        pkce = oauth.new_pkce() if spec.supports_pkce else None
        state = oauth.new_state()
        now = time.time()
        pending = oauth.PendingAuthorization(
            venue_id=venue_id,
            provider=provider,
            redirect_uri=redirect_uri,
            scopes=chosen,
            principal=actor.subject,
            code_verifier=pkce.verifier if pkce else "",
            issued_at=now,
            expires_at=now + self._ttl_s,
        )
        url = adapter.authorization_url(
            state=state,
            redirect_uri=redirect_uri,
            scopes=chosen,
            code_challenge=pkce.challenge if pkce else "",
        )
        await self._states.put(state, pending)
        return Started(url, state, datetime.fromtimestamp(pending.expires_at, UTC))

    async def complete(
        self,
        actor: Actor | None,
        *,
        state: str,
        code: str,
        error: str,
        params: Mapping[str, str],
    ) -> Connection:
        """`actor` None: the HTTP callback (the browser holds the state, not a token); the
        connection is then created on behalf of whoever started the authorization."""
        if not _STATE.match(state):
            raise OAuthStateUnknown()
        found, pending = await self._states.peek(state)
        if found == "used":
            raise OAuthStateUsed()
        if pending is None:
            raise OAuthStateUnknown()
        if time.time() > pending.expires_at:
            raise OAuthStateExpired()
        if actor is not None and not (
            actor.manages(pending.venue_id) and (actor.admin or actor.subject == pending.principal)
        ):
            raise OAuthStateOtherCaller()
        if not error and not code:
            raise InvalidInput([Violation("code", "required (or error)")])
        adapter = self._adapter(pending.provider)
        if not await self._states.consume(state, pending):
            raise OAuthStateUsed()
        if error:
            raise OAuthDenied(error)
        grant = await adapter.exchange_code(
            code=code,
            redirect_uri=pending.redirect_uri,
            code_verifier=pending.code_verifier,
            params=params,
        )
        account = await adapter.account(grant)
        owner = actor or Actor(pending.principal, admin=True)
        # Mailchimp signs nothing: its webhook URL carries a per-connection secret (kept in the
        # vault for the sync engine that registers the webhook; only its digest is queryable).
        hook_secret = secrets.token_urlsafe(32) if pending.provider is Provider.MAILCHIMP else ""
        credential = Credential(
            kind=AuthKind.OAUTH2,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            webhook_secret=Secret(hook_secret),
        )
        digest = webhooks.secret_digest(hook_secret) if hook_secret else None
        access, refresh_expires, due = lifetimes(pending.provider, grant, self._rules.timing)
        scopes = grant.scopes or pending.scopes
        async with self._db.transaction() as conn:
            existing = await connections_store.find_live(
                conn, pending.venue_id, pending.provider, account.account_id
            )
            if existing is None:
                connection_id = uuid.uuid4()
                sealed = await self._vault.seal(connection_id, pending.provider.value, credential)
                connection = await connections_store.insert(
                    conn,
                    connection_id=connection_id,
                    venue_id=pending.venue_id,
                    provider=pending.provider,
                    auth_kind=AuthKind.OAUTH2,
                    scopes=scopes,
                    account_id=account.account_id,
                    account_name=account.account_name,
                    credential_hint="",
                    api_base=account.api_base,
                    settings={},
                    webhook_secret_digest=digest,
                    token_expires_at=access,
                    refresh_expires_at=refresh_expires,
                    refresh_due_at=due,
                    created_by=owner.subject,
                )
                await credentials_store.put(conn, sealed)
            else:
                sealed = await self._vault.seal(existing.id, pending.provider.value, credential)
                await credentials_store.put(conn, sealed)
                connection = await connections_store.reconnect(
                    conn,
                    existing.id,
                    scopes=scopes,
                    account_name=account.account_name,
                    credential_hint="",
                    api_base=account.api_base,
                    token_expires_at=access,
                    refresh_expires_at=refresh_expires,
                    refresh_due_at=due,
                    webhook_secret_digest=digest,
                )
                connection = await self._connection_states.recover(
                    conn, connection, recovered_by="oauth"
                )
        return connection
