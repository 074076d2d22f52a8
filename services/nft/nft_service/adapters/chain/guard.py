"""The single seam between Solana RPC calls and the kit's resilience guard.

Every RPC call of `SolanaRpc` goes through `guard.call(operation, fn, idempotent=True)` — the
kit's one guard protocol (`meshkit.resilience.ProviderGuard`); in the service that is
`kit.guards["solana"]` (meshkit.resilience: shared Redis rate limit → circuit
breaker → retries with backoff honouring Retry-After and the caller's deadline), configured by
the kit's `PROVIDER_POLICIES` (`{"solana": {...}}`).

The functions handed to the guard raise `ChainError` (already classified), which the kit's
classifier reads through its `retryable` / `retry_after` attributes: retryable kinds are retried
and count as health failures for the breaker; permanent ones (a preflight rejection, insufficient
funds) come back unchanged and count as healthy answers. When the guard itself gives up (breaker
open, rate limit, retries spent, deadline) it raises a MeshError; `from_guard_error` turns that
back into a retryable `ChainError`, so callers of the chain deal with one error type only.
"""

from __future__ import annotations

from meshkit.errors import MeshError, ResourceExhausted
from nft_service.adapters.chain.base import ChainError, ErrorKind


def from_guard_error(exc: MeshError) -> ChainError:
    """A ChainError for the guard's final answer, keeping the last provider error's kind."""
    cause = exc.__cause__
    if isinstance(cause, ChainError):
        return ChainError(
            cause.kind,
            f"{cause.message} ({exc.reason})",
            retry_after=exc.retry_after if exc.retry_after is not None else cause.retry_after,
        )
    kind = ErrorKind.RATE_LIMITED if isinstance(exc, ResourceExhausted) else ErrorKind.UNAVAILABLE
    return ChainError(kind, f"{exc.reason}: {exc.message}", retry_after=exc.retry_after)
