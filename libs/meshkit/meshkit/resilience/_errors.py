"""Errors the guard raises, and the one an adapter raises for a provider's HTTP answer.

The guard's own decisions (breaker open, over the rate limit, out of time, provider still failing
after the retries it could afford) are `MeshError`s, so a servicer that lets them through answers
with the right gRPC code and RetryInfo without mapping anything. Business answers from the
provider (a card decline, any other 4xx) are never converted: the adapter gets the original
exception and maps it to its domain.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshkit.errors import DeadlineExceeded, ResourceExhausted, Unavailable


class ProviderError(Exception):
    """A provider answered with a status the adapter wants the guard to judge.

    Adapters raise it (or let httpx/aiohttp/SDK errors through: the classifier reads their
    status and headers too). `headers` carries Retry-After and rate-limit headers.
    """

    def __init__(
        self,
        status: int,
        message: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message or f"provider answered HTTP {status}")
        self.status = status
        self.headers = dict(headers or {})
        self.code = code


def _meta(provider: str, operation: str) -> dict[str, str]:
    return {"provider": provider, "operation": operation}


class CircuitOpen(Unavailable):
    """The provider's breaker is open (or half-open with every probe slot taken)."""

    default_reason = "CIRCUIT_OPEN"

    def __init__(self, provider: str, operation: str, retry_after: float) -> None:
        super().__init__(
            f"{provider} is failing; calls are paused",
            metadata=_meta(provider, operation),
            retry_after=retry_after,
        )
        self.provider = provider


class RateLimited(ResourceExhausted):
    """The shared rate or concurrency limit has no slot within the caller's deadline."""

    default_reason = "RATE_LIMITED"

    def __init__(self, provider: str, operation: str, retry_after: float) -> None:
        super().__init__(
            f"{provider} rate limit reached",
            metadata=_meta(provider, operation),
            retry_after=retry_after,
        )
        self.provider = provider


class ProviderThrottled(ResourceExhausted):
    """The provider kept answering 429 and waiting longer does not fit the deadline/budget."""

    default_reason = "PROVIDER_RATE_LIMITED"

    def __init__(self, provider: str, operation: str, retry_after: float | None) -> None:
        super().__init__(
            f"{provider} is throttling requests",
            metadata=_meta(provider, operation),
            retry_after=retry_after,
        )
        self.provider = provider


class ProviderUnavailable(Unavailable):
    """The provider failed (5xx, timeout, connection error) and no further retry was allowed."""

    default_reason = "PROVIDER_UNAVAILABLE"

    def __init__(
        self, provider: str, operation: str, retry_after: float | None, detail: str
    ) -> None:
        super().__init__(
            f"{provider} is unavailable ({detail})",
            metadata=_meta(provider, operation),
            retry_after=retry_after,
        )
        self.provider = provider


class ProviderDeadlineExceeded(DeadlineExceeded):
    """The caller's deadline left no time for (another) attempt."""

    default_reason = "PROVIDER_DEADLINE_EXCEEDED"

    def __init__(self, provider: str, operation: str) -> None:
        super().__init__(
            f"no time left for calling {provider}", metadata=_meta(provider, operation)
        )
        self.provider = provider


class SharedStateUnavailable(Unavailable):
    """Redis is unreachable and the provider's fallback policy is `reject`."""

    default_reason = "GUARD_STATE_UNAVAILABLE"

    def __init__(self, provider: str, operation: str) -> None:
        super().__init__(
            f"shared limits for {provider} are unavailable",
            metadata=_meta(provider, operation),
            retry_after=1.0,
        )
        self.provider = provider
