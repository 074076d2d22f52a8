"""Stripe through the official `stripe` SDK's async calls (httpx): a venue connects a restricted
key (`rk_…`); `products.list(limit=1)` is the cheap authenticated call the catalogue sync's
permission needs. The SDK's own retries are off: the `stripe` guard decides (90 req/s).
Restricted keys are revoked in the venue's Stripe dashboard: Disconnect destroys our copy.
"""

from __future__ import annotations

from typing import Any

import stripe

from integration_service.domain.errors import ApiKeyRefused, GrantRefused, ProviderRejected
from integration_service.domain.model import AccountInfo, Connection, Credential
from meshkit.resilience import ProviderGuard


class StripeAdapter:
    def __init__(self, *, api_base: str, guard: ProviderGuard, timeout_s: float) -> None:
        self._base = api_base.rstrip("/")
        self._guard = guard
        # One pooled async HTTP client for every venue's key (the key travels per request).
        self._http = stripe.HTTPXClient(timeout=timeout_s)

    def _client(self, key: str) -> stripe.StripeClient:
        return stripe.StripeClient(
            key,
            base_addresses={"api": self._base},
            max_network_retries=0,
            http_client=self._http,
        )

    async def _probe(self, key: str) -> Any:
        client = self._client(key)

        async def attempt() -> Any:
            try:
                return await client.v1.products.list_async({"limit": 1})
            except stripe.APIConnectionError as exc:
                # Unreachable: a transient failure the guard retries (the SDK's error carries
                # no status the guard could read).
                raise ConnectionError(str(exc.user_message or "Stripe unreachable")) from None

        return await self._guard.call("products.list", attempt, idempotent=True)

    async def check_key(self, api_key: str) -> AccountInfo:
        try:
            await self._probe(api_key)
        except stripe.AuthenticationError:
            raise ApiKeyRefused("Stripe does not know this key") from None
        except stripe.PermissionError:
            raise ApiKeyRefused("the key lacks the products permission") from None
        return AccountInfo(account_id="")

    async def test(self, connection: Connection, credential: Credential) -> AccountInfo:
        try:
            await self._probe(credential.bearer)
        except stripe.AuthenticationError:
            raise GrantRefused("api_key_revoked", "Stripe refused the key") from None
        except stripe.PermissionError:
            raise ProviderRejected(
                "insufficient_permissions", "the key lacks permissions"
            ) from None
        return AccountInfo(connection.external_account_id, connection.external_account_name)

    async def revoke(self, connection: Connection, credential: Credential) -> bool:
        return False
