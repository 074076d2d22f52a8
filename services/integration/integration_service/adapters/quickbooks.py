"""QuickBooks Online through the official SDKs: `intuit-oauth` (AuthClient: authorization URL,
code exchange, refresh, revoke; it reads Intuit's discovery document, a setting, so dev and tests
reach the stand-in) and `python-quickbooks` (CompanyInfo, the cheap test call).

Both SDKs are synchronous (requests): every call runs in a worker thread (`asyncio.to_thread`)
inside the `quickbooks` guard (450 req/min and 10 in flight per realm, shared by every replica;
the realm id is the guard's scope), so the event loop never blocks. python-quickbooks talks
through requests-oauthlib, which refuses plain-http URLs: for an http API base (dev and tests
only — production settings refuse http) this adapter sets OAUTHLIB_INSECURE_TRANSPORT=1.
Refresh tokens rotate: the newest one Intuit answers is returned for the vault to keep.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests
from intuitlib.client import AuthClient  # type: ignore[import-untyped]
from intuitlib.enums import Scopes  # type: ignore[import-untyped]
from intuitlib.exceptions import AuthClientError  # type: ignore[import-untyped]
from quickbooks import QuickBooks  # type: ignore[import-untyped]
from quickbooks.exceptions import (  # type: ignore[import-untyped]
    AuthorizationException,
    QuickbooksException,
    SevereException,
)
from quickbooks.objects.company_info import CompanyInfo  # type: ignore[import-untyped]

from integration_service.adapters.base import in_seconds
from integration_service.domain.errors import (
    GrantRefused,
    MissingRedirectParam,
    OAuthCodeRefused,
    ProviderRejected,
)
from integration_service.domain.model import (
    AccountInfo,
    Connection,
    Credential,
    Secret,
    TokenGrant,
)
from meshkit.resilience import ProviderError, ProviderGuard

T = TypeVar("T")
MINOR_VERSION = 75
_STATUS = re.compile(r"status code '(\d{3})'")


def _oauth_error(exc: AuthClientError) -> str:
    try:
        return str(json.loads(exc.content).get("error") or exc.status_code)
    except (ValueError, AttributeError, TypeError):
        return str(exc.status_code)


class QuickBooksAdapter:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        discovery_url: str,
        api_base: str,
        guard: ProviderGuard,
        timeout_s: float,
    ) -> None:
        self._id = client_id
        self._secret = client_secret
        self._discovery = discovery_url
        self._api = api_base.rstrip("/") + "/v3"
        self._guard = guard
        self._timeout_s = timeout_s
        self._auth_endpoint = ""
        if self._api.startswith("http://"):
            os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"

    def _auth(self, redirect_uri: str = "", **tokens: Any) -> AuthClient:
        """Blocking (reads the discovery document): call in a thread."""
        return AuthClient(
            self._id,
            self._secret,
            redirect_uri or "https://localhost/unused",
            self._discovery,
            **tokens,
        )

    async def _call(
        self, operation: str, fn: Callable[[], T], *, idempotent: bool, scope: str | None = None
    ) -> T:
        async def attempt() -> T:
            try:
                return await asyncio.to_thread(fn)
            except AuthClientError as exc:
                if exc.status_code == 429 or exc.status_code >= 500:
                    raise ProviderError(exc.status_code, headers=dict(exc.headers)) from None
                raise
            except AuthorizationException:
                raise
            except requests.RequestException as exc:
                if exc.response is not None and (
                    exc.response.status_code == 429 or exc.response.status_code >= 500
                ):
                    raise ProviderError(exc.response.status_code) from None
                raise ConnectionError(type(exc).__name__) from None  # transient: retried
            except SevereException:
                raise ProviderError(503, "QuickBooks system fault") from None  # 10000+: retried
            except QuickbooksException as exc:
                found = _STATUS.search(str(exc.message))
                if found and (found.group(1) == "429" or found.group(1).startswith("5")):
                    raise ProviderError(int(found.group(1))) from None
                raise

        return await self._guard.call(
            operation, attempt, idempotent=idempotent, scope=scope, timeout=self._timeout_s * 2
        )

    async def start(self) -> None:
        """Learn the authorization endpoint from the discovery document (once)."""
        auth = await asyncio.to_thread(self._auth)
        self._auth_endpoint = str(auth.auth_endpoint)

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: tuple[str, ...], code_challenge: str
    ) -> str:
        from urllib.parse import urlencode

        params = {
            "client_id": self._id,
            "response_type": "code",
            "scope": " ".join(scopes) or Scopes.ACCOUNTING.value,
            "redirect_uri": redirect_uri,
            "state": state,
        }
        return f"{self._auth_endpoint}?{urlencode(params)}"

    @staticmethod
    def _grant(auth: AuthClient, realm_id: str, scopes: tuple[str, ...] = ()) -> TokenGrant:
        return TokenGrant(
            access_token=Secret(str(auth.access_token or "")),
            refresh_token=Secret(str(auth.refresh_token or "")),
            access_expires_at=in_seconds(auth.expires_in),
            refresh_expires_at=in_seconds(auth.x_refresh_token_expires_in),
            scopes=scopes,
            account_id=realm_id,
        )

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, params: Mapping[str, str]
    ) -> TokenGrant:
        realm = params.get("realmId", "")
        if not realm:
            raise MissingRedirectParam("realmId")

        def exchange() -> AuthClient:
            auth = self._auth(redirect_uri)
            auth.get_bearer_token(code, realm_id=realm)
            return auth

        try:
            auth = await self._call("oauth.exchange", exchange, idempotent=False, scope=realm)
        except AuthClientError as exc:
            raise OAuthCodeRefused(_oauth_error(exc)) from None
        return self._grant(auth, realm)

    async def refresh(self, connection: Connection, credential: Credential) -> TokenGrant:
        realm = connection.external_account_id

        def refresh() -> AuthClient:
            auth = self._auth()
            auth.refresh(refresh_token=credential.refresh_token.reveal())
            return auth

        try:
            # Not retried by the guard: a lost answer may have rotated the token already
            # (Intuit's 60 s grace answers the newest one to the next refresh).
            auth = await self._call("oauth.refresh", refresh, idempotent=False, scope=realm)
        except AuthClientError as exc:
            raise GrantRefused(_oauth_error(exc), "Intuit refused the refresh token") from None
        return self._grant(auth, realm, connection.scopes)

    def _company(self, realm: str, access_token: str) -> Any:
        auth = self._auth(access_token=access_token)
        qb = QuickBooks(auth_client=auth, company_id=realm, minorversion=MINOR_VERSION)
        qb.api_url_v3 = self._api
        return CompanyInfo.get(realm, qb=qb)

    async def _info(self, realm: str, access_token: str) -> AccountInfo:
        try:
            info = await self._call(
                "companyinfo.get",
                lambda: self._company(realm, access_token),
                idempotent=True,
                scope=realm,
            )
        except AuthorizationException:
            raise GrantRefused("unauthorized", "QuickBooks refused the access token") from None
        except QuickbooksException as exc:
            raise ProviderRejected(str(exc.error_code or "error"), str(exc.message)[:200]) from None
        return AccountInfo(account_id=realm, account_name=str(info.CompanyName or ""))

    async def account(self, grant: TokenGrant) -> AccountInfo:
        return await self._info(grant.account_id, grant.access_token.reveal())

    async def test(self, connection: Connection, credential: Credential) -> AccountInfo:
        return await self._info(connection.external_account_id, credential.bearer)

    async def revoke(self, connection: Connection, credential: Credential) -> bool:
        token = credential.refresh_token.reveal() or credential.access_token.reveal()

        def revoke() -> bool:
            return bool(self._auth().revoke(token=token))

        try:
            return await self._call(
                "oauth.revoke", revoke, idempotent=True, scope=connection.external_account_id
            )
        except AuthClientError:
            return False  # already ended at Intuit
