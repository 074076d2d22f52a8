"""Mailchimp: OAuth (authorize, token, metadata) over httpx — the `mailchimp-marketing` SDK has
no OAuth calls — and the SDK for the API (`ping.get`, the cheap test call). Tokens never expire;
the account's API host is the metadata endpoint's `api_endpoint` (+ "/3.0", the SDK's one
supported knob: right for the stand-in and for production alike).

The SDK is synchronous (urllib3): its calls run in a worker thread inside the `mailchimp`
guard (9 req/s and 10 in flight per account, shared by every replica). Mailchimp has no token
revocation: Disconnect destroys our copy (the user removes the app in Mailchimp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
import mailchimp_marketing  # type: ignore[import-untyped]
import urllib3
from mailchimp_marketing.api_client import ApiClientError  # type: ignore[import-untyped]

from integration_service.domain.errors import GrantRefused, OAuthCodeRefused, ProviderRejected
from integration_service.domain.model import (
    AccountInfo,
    Connection,
    Credential,
    Secret,
    TokenGrant,
)
from meshkit.resilience import ProviderError, ProviderGuard


class MailchimpAdapter:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        login_base: str,
        guard: ProviderGuard,
        timeout_s: float,
    ) -> None:
        self._id = client_id
        self._secret = client_secret
        self._login = login_base.rstrip("/")
        self._guard = guard
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: tuple[str, ...], code_challenge: str
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": self._id,
            "redirect_uri": redirect_uri,
            "state": state,
        }
        return f"{self._login}/oauth2/authorize?{urlencode(params)}"

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, params: Mapping[str, str]
    ) -> TokenGrant:
        async def exchange() -> httpx.Response:
            answer = await self._http.post(
                f"{self._login}/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": self._id,
                    "client_secret": self._secret,
                    "redirect_uri": redirect_uri,
                    "code": code,
                },
            )
            if answer.status_code == 429 or answer.status_code >= 500:
                answer.raise_for_status()
            return answer

        answer = await self._guard.call("oauth.token", exchange)
        if answer.status_code != 200:
            try:
                error = str(answer.json().get("error") or answer.status_code)
            except ValueError:
                error = str(answer.status_code)
            raise OAuthCodeRefused(error)
        token = str(answer.json().get("access_token") or "")
        metadata = await self._metadata(token)
        return TokenGrant(
            access_token=Secret(token),
            refresh_token=Secret(""),
            access_expires_at=None,
            account_id=str(
                metadata.get("user_id") or metadata.get("login", {}).get("login_id") or ""
            ),
        )

    async def _metadata(self, token: str) -> dict[str, Any]:
        async def fetch() -> httpx.Response:
            answer = await self._http.get(
                f"{self._login}/oauth2/metadata", headers={"Authorization": f"OAuth {token}"}
            )
            if answer.status_code == 429 or answer.status_code >= 500:
                answer.raise_for_status()
            return answer

        answer = await self._guard.call("oauth.metadata", fetch, idempotent=True)
        if answer.status_code == 401:
            raise GrantRefused("invalid_token", "Mailchimp refused the token")
        if answer.status_code != 200:
            raise ProviderRejected(str(answer.status_code), "Mailchimp metadata unavailable")
        data: dict[str, Any] = answer.json()
        return data

    async def account(self, grant: TokenGrant) -> AccountInfo:
        metadata = await self._metadata(grant.access_token.reveal())
        return AccountInfo(
            account_id=grant.account_id or str(metadata.get("user_id") or ""),
            account_name=str(metadata.get("accountname") or ""),
            api_base=str(metadata.get("api_endpoint") or ""),
        )

    async def refresh(self, connection: Connection, credential: Credential) -> TokenGrant:
        raise GrantRefused("not_refreshable", "Mailchimp tokens do not expire")

    async def test(self, connection: Connection, credential: Credential) -> AccountInfo:
        host = connection.api_base
        if not host:
            host = str((await self._metadata(credential.bearer)).get("api_endpoint") or "")
        token = credential.bearer

        def ping() -> Any:
            client = mailchimp_marketing.Client()
            client.set_config({"access_token": token, "server": "unused"})
            client.api_client.host = host.rstrip("/") + "/3.0"
            client.api_client.timeout = self._timeout_s
            return client.ping.get()

        async def attempt() -> Any:
            try:
                return await asyncio.to_thread(ping)
            except ApiClientError as exc:
                if exc.status_code == 429 or exc.status_code >= 500:
                    raise ProviderError(exc.status_code) from None
                raise
            except urllib3.exceptions.HTTPError as exc:
                raise ConnectionError(type(exc).__name__) from None  # transient: retried

        try:
            await self._guard.call(
                "ping.get", attempt, idempotent=True, scope=connection.external_account_id
            )
        except ApiClientError as exc:
            if exc.status_code == 401:
                raise GrantRefused("invalid_token", "Mailchimp refused the token") from None
            raise ProviderRejected(str(exc.status_code), "Mailchimp refused the call") from None
        return AccountInfo(connection.external_account_id, connection.external_account_name, host)

    async def revoke(self, connection: Connection, credential: Credential) -> bool:
        return False
