"""One table of per-provider policies: rate limit, concurrency cap, breaker, retries, fallback.

Defaults come from the providers' published limits with about 10 % headroom; a deployment
overrides any field of any provider (or adds a provider) with one JSON object in
`PROVIDER_POLICIES`, e.g. `{"solana": {"rate": 40}, "stripe": {"rate": 20}}` for a Stripe
account in test mode (25 ops/s).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FallbackMode = Literal["local", "allow", "reject"]


@dataclass(frozen=True, slots=True)
class ProviderPolicy:
    """How one provider is guarded. Every field has a default; times are seconds."""

    rate: float | None = None
    """Requests allowed per `period_s` across all replicas; None means no rate limit."""
    period_s: float = 1.0
    """The window the provider counts `rate` in."""
    burst: int = 1
    """Requests that may go back to back; 1 keeps every `period_s` window at or under `rate`."""
    jitter_s: float = 0.04
    """Arrival jitter the pacing absorbs, so that a window at the provider never holds more
    than `rate` even when requests reach it a little late or early."""
    max_wait_s: float = 5.0
    """Longest wait for a rate or concurrency slot when the caller has no (longer) deadline."""
    concurrency: int | None = None
    """Requests in flight at once across all replicas (bulkhead); None means no cap."""
    breaker: bool = True
    """Whether calls go through a circuit breaker."""
    fail_max: int = 5
    """Consecutive health failures that open the breaker."""
    failure_rate: float = 0.5
    """Share of health failures within `window_s` that opens the breaker ..."""
    min_calls: int = 20
    """... once the window holds at least this many calls."""
    window_s: float = 30.0
    """Length of the failure-rate window."""
    reset_timeout_s: float = 30.0
    """How long the breaker stays open before letting probes through (half-open)."""
    half_open_probes: int = 2
    """Probes allowed in flight while half-open; every other call fails fast."""
    success_threshold: int = 2
    """Successful probes that close the breaker again."""
    max_attempts: int = 3
    """Attempts per call, the first included (idempotent calls only; others get one)."""
    backoff_base_s: float = 0.2
    """Base of the exponential backoff (full jitter: a uniform draw up to base * 2^n)."""
    backoff_max_s: float = 5.0
    """Cap of one backoff sleep (a longer Retry-After is honoured if the deadline allows)."""
    attempt_timeout_s: float = 10.0
    """Timeout of one attempt (shortened to the caller's remaining deadline)."""
    retry_budget_ratio: float = 0.2
    """Retries allowed as a share of calls over `retry_budget_window_s` (Linkerd: 0.2)."""
    retry_budget_min_per_s: float = 1.0
    """Retries per second always allowed across all replicas (the budget's floor)."""
    retry_budget_window_s: float = 10.0
    """Window of the retry budget."""
    fallback: FallbackMode = "local"
    """When Redis is unreachable: `local` limits each replica to its share (rate and
    concurrency divided by the expected replicas) and keeps a local breaker; `allow` skips the
    shared limits; `reject` fails calls with UNAVAILABLE."""

    def __post_init__(self) -> None:
        problems = []
        if self.rate is not None and self.rate <= 0:
            problems.append("rate must be > 0 (or null)")
        if self.period_s <= 0:
            problems.append("period_s must be > 0")
        if self.burst < 1:
            problems.append("burst must be >= 1")
        if self.rate is not None and self.burst > max(1.0, self.rate):
            problems.append("burst must not exceed rate")
        if self.concurrency is not None and self.concurrency < 1:
            problems.append("concurrency must be >= 1 (or null)")
        if self.max_attempts < 1:
            problems.append("max_attempts must be >= 1")
        if not 0 < self.failure_rate <= 1:
            problems.append("failure_rate must be in (0, 1]")
        if self.half_open_probes < 1 or self.success_threshold < 1:
            problems.append("half_open_probes and success_threshold must be >= 1")
        if self.fallback not in ("local", "allow", "reject"):
            problems.append("fallback must be local, allow or reject")
        if problems:
            raise ValueError("; ".join(problems))

    def emission_interval_s(self) -> float:
        """Spacing of requests: with `burst` back-to-back requests allowed, any window of
        `period_s` (plus the jitter allowance) holds at most `rate` requests."""
        assert self.rate is not None
        return (self.period_s + self.jitter_s) / (self.rate - self.burst + 1)

    def local_share(self, replicas: int) -> ProviderPolicy:
        """This replica's share of the shared limits, for the local fallback."""
        n = max(1, replicas)
        rate = None if self.rate is None else self.rate / n
        burst = self.burst if rate is None else max(1, min(self.burst // n, math.floor(rate)))
        concurrency = None if self.concurrency is None else max(1, self.concurrency // n)
        return dataclasses.replace(self, rate=rate, burst=burst, concurrency=concurrency)


def _policy(**values: Any) -> ProviderPolicy:
    return ProviderPolicy(**values)


DEFAULT_POLICIES: Mapping[str, ProviderPolicy] = {
    # 100 ops/s in live mode (25 in test mode: override rate to ~22 for a test account).
    "stripe": _policy(rate=90.0, attempt_timeout_s=20.0),
    # Square publishes no number; 45 req/s keeps well inside what it tolerates.
    "square": _policy(rate=45.0),
    # 10 simultaneous connections per account; 9 req/s keeps the connections short-lived.
    "mailchimp": _policy(rate=9.0, concurrency=10),
    # 500 req/min and 10 concurrent per realm (pass the realm id as `scope`).
    "quickbooks": _policy(rate=450.0, period_s=60.0, burst=10, concurrency=10),
    # 600 req/min per user on the rate-limited v3 endpoints; X-RateLimit-Reset is honoured.
    "sendgrid": _policy(rate=540.0, period_s=60.0, burst=10),
    # REST API concurrency limit of 100 per account; 429 (error 20429) is safe to retry.
    "twilio": _policy(rate=90.0, concurrency=90),
    # Public RPC endpoints: 100 req/10 s per IP, 40 concurrent; paid endpoints: override.
    "solana": _policy(rate=90.0, period_s=10.0, burst=5, concurrency=36),
    # Plain SMTP relay: no published request limit; a breaker and retries only.
    "smtp": _policy(concurrency=20),
    # Fetching NFT metadata documents to check their content address (nft's tamper check):
    # the platform's own metadata host, so no rate limit; a cap per host (`scope`), short
    # attempts and one retry, so that a check answers "unreachable" quickly.
    "metadata": _policy(
        concurrency=32, max_attempts=2, attempt_timeout_s=3.0, backoff_base_s=0.1, max_wait_s=1.0
    ),
}

_FIELDS = frozenset(f.name for f in dataclasses.fields(ProviderPolicy))


def load_policies(
    overrides: str | Mapping[str, Mapping[str, Any]] = "",
    defaults: Mapping[str, ProviderPolicy] = DEFAULT_POLICIES,
) -> dict[str, ProviderPolicy]:
    """The defaults with per-provider overrides applied (JSON text or a mapping).

    Raises ValueError naming every unknown field and every invalid value at once.
    """
    data: Mapping[str, Any]
    if isinstance(overrides, str):
        data = json.loads(overrides) if overrides.strip() else {}
    else:
        data = overrides
    if not isinstance(data, Mapping):
        raise ValueError("PROVIDER_POLICIES must be a JSON object of provider -> fields")
    policies = dict(defaults)
    problems: list[str] = []
    for provider, fields in data.items():
        if not isinstance(fields, Mapping):
            problems.append(f"{provider}: expected an object of fields")
            continue
        unknown = sorted(set(fields) - _FIELDS)
        if unknown:
            problems.append(f"{provider}: unknown fields {', '.join(unknown)}")
            continue
        try:
            policies[provider] = dataclasses.replace(
                policies.get(provider, ProviderPolicy()), **fields
            )
        except (TypeError, ValueError) as exc:
            problems.append(f"{provider}: {exc}")
    if problems:
        raise ValueError("invalid PROVIDER_POLICIES: " + "; ".join(problems))
    return policies


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Settings shared by every guard of a process."""

    expected_replicas: int = 2
    """Replicas of this service; the local fallback gives each replica its share."""
    redis_retry_s: float = 1.0
    """After Redis failed, how long guards use the fallback before trying Redis again."""
    redis_timeout_s: float = 0.25
    """Timeout of one Redis decision (a slow Redis must not stall provider calls)."""
    deadline_margin_s: float = 0.02
    """Time kept back from the caller's deadline so the answer reaches the caller in time."""
    min_attempt_s: float = 0.05
    """An attempt (or a wait for a slot) is not started with less time than this left."""
    key_prefix: str = "guard"
    """Prefix of every Redis key the guards use."""
    policies: Mapping[str, ProviderPolicy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))
    """The per-provider policies (see `load_policies`)."""
