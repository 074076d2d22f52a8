"""Prometheus metrics of the provider guards, one set per registry.

`provider_requests_total{provider,operation,outcome}` counts every attempt that went out (outcome
`ok`, `client_error`, `throttled`, `server_error`, `timeout`, `connection_error`, `error`) and every
call the guard stopped before it went out (`circuit_open`, `rate_limited`, `deadline`,
`state_unavailable`). `circuit_breaker_state{provider}` is 0 closed, 1 half-open, 2 open.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BREAKER_STATE_VALUE = {"closed": 0, "half-open": 1, "open": 2}

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GuardMetrics:
    """The guards' collectors on one registry (shared by every guard using that registry)."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, GuardMetrics] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "provider_requests_total",
            "Provider attempts by outcome, and calls the guard stopped before sending.",
            ["provider", "operation", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "provider_request_duration_seconds",
            "Duration of one attempt at a provider.",
            ["provider", "operation"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "provider_retries_total",
            "Retries of provider calls.",
            ["provider", "operation"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "circuit_breaker_transitions_total",
            "Circuit breaker state changes seen by this process.",
            ["provider", "to_state"],
            registry=registry,
        )
        self.rate_wait = Histogram(
            "rate_limit_wait_seconds",
            "Time calls waited for a rate-limit or concurrency slot.",
            ["provider"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.rate_rejected = Counter(
            "rate_limit_rejected_total",
            "Calls refused because no slot was free within their deadline.",
            ["provider"],
            registry=registry,
        )
        self.missed_slots = Counter(
            "rate_limit_missed_slots_total",
            "Rate-limit slots given up because the process woke too late to use them "
            "(a starved process; the call booked a new slot).",
            ["provider"],
            registry=registry,
        )
        self.budget_exhausted = Counter(
            "retry_budget_exhausted_total",
            "Retries skipped because the provider's retry budget was spent.",
            ["provider"],
            registry=registry,
        )
        self.fallback = Counter(
            "guard_fallback_decisions_total",
            "Decisions taken locally because Redis (the shared state) was unreachable.",
            ["provider", "component"],
            registry=registry,
        )
        self.shared_up = Gauge(
            "guard_shared_state_up",
            "1 while the guards reach Redis, 0 while they run on the local fallback.",
            registry=registry,
        )
        self.shared_up.set(1)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> GuardMetrics:
        """The metrics on `registry`, created on first use."""
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls(registry)
            cls._by_registry[registry] = metrics
        return metrics
