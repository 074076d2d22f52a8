"""What the use cases need of a provider adapter, as protocols; adapters answer domain values
(`TokenGrant`, `AccountInfo`) and domain exceptions (`GrantRefused`, `OAuthCodeRefused`,
`ApiKeyRefused`, `ProviderRejected`). Throttling, 5xx and timeouts are the guard's: they come
back as the kit's errors after its retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from integration_service.domain.model import AccountInfo, Connection, Credential, TokenGrant


class OAuthAdapter(Protocol):
    """A provider venues connect to by OAuth 2 (authorization code flow)."""

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: tuple[str, ...], code_challenge: str
    ) -> str: ...

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, params: Mapping[str, str]
    ) -> TokenGrant: ...

    async def refresh(self, connection: Connection, credential: Credential) -> TokenGrant:
        """A new access token (and the newest refresh token); `GrantRefused` when the
        provider refuses the grant."""
        ...

    async def account(self, grant: TokenGrant) -> AccountInfo:
        """Who authorized (after the code exchange)."""
        ...

    async def test(self, connection: Connection, credential: Credential) -> AccountInfo:
        """One cheap authenticated call; `GrantRefused` when the credentials are refused."""
        ...

    async def revoke(self, connection: Connection, credential: Credential) -> bool:
        """End the grant at the provider; False when the provider has no revocation."""
        ...


class ApiKeyAdapter(Protocol):
    """A provider venues connect to with an API key."""

    async def check_key(self, api_key: str) -> AccountInfo:
        """One cheap authenticated call with the key; `ApiKeyRefused` when refused."""
        ...

    async def test(self, connection: Connection, credential: Credential) -> AccountInfo: ...

    async def revoke(self, connection: Connection, credential: Credential) -> bool: ...


def in_seconds(seconds: float | int | str | None) -> datetime | None:
    """An absolute expiry from a lifetime in seconds (None or 0: never expires)."""
    if seconds in (None, "", 0, "0"):
        return None
    return datetime.now(UTC) + timedelta(seconds=float(seconds))


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
