"""Resilience for every outbound provider call: shared rate limits, breakers, retries.

A service gets `kit.guards` (built once at start from the policy table, `PROVIDER_POLICIES`
overriding it) and wraps each provider request in one line:

    intent = await kit.guards["stripe"].call(
        "payment_intents.create", lambda: stripe.payment_intents.create_async(...),
        idempotency_key=key,
    )

State that must hold across replicas (rate-limit slots, concurrency leases, breaker state) lives
in Redis and is changed only by atomic Lua scripts; when Redis is unreachable each provider falls
back to its policy (by default this replica's share of the limits and a local breaker).
"""

from meshkit.resilience._breaker import BreakerRejected, CircuitBreaker, LocalBreakerState
from meshkit.resilience._errors import (
    CircuitOpen,
    ProviderDeadlineExceeded,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
    RateLimited,
    SharedStateUnavailable,
)
from meshkit.resilience._guard import Guard, Guards, ProviderGuard, connect_guard_redis
from meshkit.resilience._metrics import GuardMetrics
from meshkit.resilience._policy import (
    DEFAULT_POLICIES,
    GuardSettings,
    ProviderPolicy,
    load_policies,
)
from meshkit.resilience._ratelimit import LocalGcra, NoSlot, RateLimiter
from meshkit.resilience._retry import (
    RetryBudget,
    Verdict,
    classify,
    classify_result,
    classify_status,
    parse_retry_after,
)
from meshkit.resilience._shared import SharedState

__all__ = [
    "DEFAULT_POLICIES",
    "BreakerRejected",
    "CircuitBreaker",
    "CircuitOpen",
    "Guard",
    "GuardMetrics",
    "GuardSettings",
    "Guards",
    "LocalBreakerState",
    "LocalGcra",
    "NoSlot",
    "ProviderDeadlineExceeded",
    "ProviderError",
    "ProviderGuard",
    "ProviderPolicy",
    "ProviderThrottled",
    "ProviderUnavailable",
    "RateLimited",
    "RateLimiter",
    "RetryBudget",
    "SharedState",
    "SharedStateUnavailable",
    "Verdict",
    "classify",
    "classify_result",
    "classify_status",
    "connect_guard_redis",
    "load_policies",
    "parse_retry_after",
]
