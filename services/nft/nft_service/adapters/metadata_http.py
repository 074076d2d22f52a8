"""Fetching a ticket's metadata document over HTTP (httpx), to check it against its uri.

Every fetch goes through the kit's guard for "metadata" (`kit.guards["metadata"]`: breaker,
retries of transient failures with backoff, per-attempt timeout, never past the caller's
deadline; its policy is `meshkit.resilience.DEFAULT_POLICIES["metadata"]`, overridable in
PROVIDER_POLICIES). A GET is idempotent, so the guard may retry it.

The answer is the bytes served, or `FetchFailed` saying why there are none (a transport error,
an HTTP error status, the guard giving up). A body larger than `max_bytes` is not read further
(`TooLarge`): no document this service issues comes near that size.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from meshkit.errors import MeshError
from meshkit.resilience import ProviderGuard

PROVIDER = "metadata"


class FetchFailed(Exception):
    """No document: `detail` says why (e.g. "HTTP 404", "ConnectError")."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TooLarge(FetchFailed):
    """The server sent more than the limit."""


class _TooLarge(Exception):
    """Raised inside an attempt: a definite answer, not a failure to retry."""

    retryable = False  # how the kit's guard tells an answer from a transient failure


class MetadataFetcher:
    """GETs metadata documents (build once, close at stop)."""

    def __init__(
        self, guard: ProviderGuard, *, timeout_s: float = 10.0, max_bytes: int = 1 << 20
    ) -> None:
        self._guard = guard
        self._max_bytes = max_bytes
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=True,
            max_redirects=3,
            headers={"Accept": "application/json"},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def fetch(self, uri: str) -> bytes:
        """The bytes served at `uri` (http or https). Raises FetchFailed."""
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FetchFailed(f"not an http(s) uri: {uri[:80]}")

        async def attempt() -> bytes:
            async with self._client.stream("GET", uri) as response:
                response.raise_for_status()  # 429/5xx are retried by the guard, 4xx are not
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise _TooLarge()
                return bytes(body)

        try:
            return await self._guard.call(
                "GET", attempt, idempotent=True, scope=parts.netloc, timeout=10.0
            )
        except _TooLarge:
            raise TooLarge(f"larger than {self._max_bytes} bytes") from None
        except httpx.HTTPStatusError as exc:
            raise FetchFailed(f"HTTP {exc.response.status_code}") from exc
        except MeshError as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx.HTTPStatusError):
                raise FetchFailed(f"HTTP {cause.response.status_code}") from exc
            what = type(cause).__name__ if cause is not None else exc.reason
            raise FetchFailed(f"{what}: {exc.message}"[:200]) from exc
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            raise FetchFailed(type(exc).__name__) from exc
