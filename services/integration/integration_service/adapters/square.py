"""Square through the official `squareup` SDK's async client (`AsyncSquare`, httpx): OAuth code
flow with PKCE (S256) and the application secret, rotating refresh tokens, revoke with
`Authorization: Client <secret>`, and `locations.list` as the cheap test call. The SDK's own
retries are off (`max_retries: 0`): the `square` guard decides (45 req/s shared).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

from square import AsyncSquare
from square.core.api_error import ApiError

from integration_service.adapters.base import parse_time
from integration_service.domain.errors import GrantRefused, OAuthCodeRefused, ProviderRejected
from integration_service.domain.model import (
    AccountInfo,
    Connection,
    Credential,
    Secret,
    TokenGrant,
)
from meshkit.resilience import ProviderGuard

T = TypeVar("T")


def _code(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    errors = body.get("errors") or [{}]
    first = errors[0] if isinstance(errors[0], dict) else {}
    return str(first.get("code") or exc.status_code or "error")


class SquareAdapter:
    def __init__(
        self,
        *,
        application_id: str,
        application_secret: str,
        api_base: str,
        guard: ProviderGuard,
        timeout_s: float,
    ) -> None:
        self._id = application_id
        self._secret = application_secret
        self._base = api_base.rstrip("/")
        self._guard = guard
        self._options: Any = {"max_retries": 0, "timeout_in_seconds": int(max(1, timeout_s))}
        self._anonymous = AsyncSquare(base_url=self._base, token=None)

    def _client(self, token: str) -> AsyncSquare:
        return AsyncSquare(base_url=self._base, token=token)

    async def _call(
        self, operation: str, fn: Callable[[], Awaitable[T]], *, idempotent: bool = True
    ) -> T:
        return await self._guard.call(operation, fn, idempotent=idempotent)

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: tuple[str, ...], code_challenge: str
    ) -> str:
        params = {
            "client_id": self._id,
            "scope": " ".join(scopes),
            "session": "false",
            "state": state,
            "redirect_uri": redirect_uri,
        }
        if code_challenge:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        return f"{self._base}/oauth2/authorize?{urlencode(params)}"

    @staticmethod
    def _grant(token: Any, scopes: tuple[str, ...] = ()) -> TokenGrant:
        return TokenGrant(
            access_token=Secret(token.access_token or ""),
            refresh_token=Secret(token.refresh_token or ""),
            access_expires_at=parse_time(token.expires_at),
            refresh_expires_at=parse_time(getattr(token, "refresh_token_expires_at", None)),
            scopes=scopes,
            account_id=token.merchant_id or "",
        )

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, params: Mapping[str, str]
    ) -> TokenGrant:
        async def exchange() -> Any:
            return await self._anonymous.o_auth.obtain_token(
                client_id=self._id,
                client_secret=self._secret,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier or None,
                redirect_uri=redirect_uri,
                request_options=self._options,
            )

        try:
            token = await self._call("oauth.obtain_token", exchange, idempotent=False)
        except ApiError as exc:
            if exc.status_code in (400, 401):
                raise OAuthCodeRefused(_code(exc)) from None
            raise
        return self._grant(token)

    async def refresh(self, connection: Connection, credential: Credential) -> TokenGrant:
        async def refresh() -> Any:
            return await self._anonymous.o_auth.obtain_token(
                client_id=self._id,
                client_secret=self._secret,
                grant_type="refresh_token",
                refresh_token=credential.refresh_token.reveal(),
                request_options=self._options,
            )

        try:
            # Not retried: a PKCE refresh token is single-use, a lost answer needs a new grant.
            token = await self._call("oauth.refresh", refresh, idempotent=False)
        except ApiError as exc:
            if exc.status_code in (400, 401):
                raise GrantRefused("invalid_grant", _code(exc)) from None
            raise
        return self._grant(token, connection.scopes)

    async def account(self, grant: TokenGrant) -> AccountInfo:
        client = self._client(grant.access_token.reveal())
        try:
            answer = await self._call(
                "merchants.get",
                lambda: client.merchants.get(
                    merchant_id=grant.account_id or "me", request_options=self._options
                ),
            )
        except ApiError as exc:
            raise ProviderRejected(_code(exc), "the merchant could not be read") from None
        merchant = answer.merchant
        return AccountInfo(
            account_id=(merchant.id if merchant else None) or grant.account_id,
            account_name=(merchant.business_name if merchant else None) or "",
        )

    async def test(self, connection: Connection, credential: Credential) -> AccountInfo:
        client = self._client(credential.bearer)
        try:
            await self._call(
                "locations.list", lambda: client.locations.list(request_options=self._options)
            )
        except ApiError as exc:
            if exc.status_code == 401:
                raise GrantRefused(_code(exc).lower(), "Square refused the access token") from None
            if exc.status_code == 403:
                raise ProviderRejected(_code(exc).lower(), "missing Square permissions") from None
            raise
        return AccountInfo(connection.external_account_id, connection.external_account_name)

    async def revoke(self, connection: Connection, credential: Credential) -> bool:
        options: Any = {
            **self._options,
            "additional_headers": {"Authorization": f"Client {self._secret}"},
        }

        async def revoke() -> Any:
            return await self._anonymous.o_auth.revoke_token(
                client_id=self._id,
                access_token=credential.access_token.reveal(),
                request_options=options,
            )

        try:
            await self._call("oauth.revoke", revoke)
        except ApiError as exc:
            if exc.status_code in (401, 404):
                return False  # already revoked or unknown: nothing left to end
            raise
        return True
