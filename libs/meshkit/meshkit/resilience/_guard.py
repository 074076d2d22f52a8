"""The guard: the one line every provider call goes through.

    await guards["stripe"].call("payment_intents.create", create, idempotent=True)

Order, outermost first (the order Resilience4j documents for the same patterns), so that every
attempt that reaches the provider is limited, counted by the breaker and metered:

  retry (tenacity: backoff with full jitter, Retry-After, budget, deadline)
    → circuit breaker (fail fast while open; bounded probes while half-open)
      → concurrency cap (shared bulkhead)
        → rate limit (wait for a shared slot if the deadline allows, else RESOURCE_EXHAUSTED;
          last, so that the request leaves right at its slot)
          → per-attempt timeout (never past the caller's deadline) → the call, awaited.

The caller's deadline is the tighter of `timeout=` and the inbound gRPC deadline
(`current_call().time_remaining()`, None when the client set none), less a small margin so the
answer still reaches the caller in time. No wait — for a slot, a backoff or a Retry-After — is
started when it would end past that deadline; the call then ends at once with the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from meshkit.context import current_call
from meshkit.resilience._breaker import (
    FAILURE,
    NEUTRAL,
    SUCCESS,
    BreakerRejected,
    CircuitBreaker,
    Ticket,
)
from meshkit.resilience._errors import (
    CircuitOpen,
    ProviderDeadlineExceeded,
    ProviderThrottled,
    ProviderUnavailable,
    RateLimited,
    SharedStateUnavailable,
)
from meshkit.resilience._metrics import GuardMetrics
from meshkit.resilience._policy import GuardSettings, ProviderPolicy
from meshkit.resilience._ratelimit import (
    ConcurrencyLimiter,
    FallbackRejected,
    NoSlot,
    RateLimiter,
)
from meshkit.resilience._retry import (
    CLIENT_ERROR,
    THROTTLED,
    FailedResponse,
    RetryBudget,
    Verdict,
    classify,
    classify_result,
)
from meshkit.resilience._shared import SharedState

_log = logging.getLogger("meshkit.resilience")

T = TypeVar("T")


class ProviderGuard(Protocol):
    """What an adapter needs of its provider's guard: the one call shape every provider call
    goes through. `Guard` implements it; adapters take a `ProviderGuard` so they can be built
    from `kit.guards["<provider>"]` without depending on how the guard is made."""

    async def call(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = False,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        scope: str | None = None,
    ) -> T: ...


class _AttemptFailed(Exception):
    """One attempt failed with a health failure; carries the verdict for tenacity."""

    def __init__(self, cause: BaseException, verdict: Verdict, *, out_of_time: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.verdict = verdict
        self.out_of_time = out_of_time


@dataclass(slots=True)
class _Call:
    """One logical call's state across its attempts."""

    operation: str
    deadline: float | None
    retry_allowed: bool
    scope: str | None
    stop_reason: str = ""
    outcome: int = NEUTRAL
    """The breaker outcome of the current attempt (set by `_send`)."""


class Guard:
    """One provider's rate limit, concurrency cap, breaker and retries (module doc)."""

    def __init__(
        self,
        provider: str,
        policy: ProviderPolicy,
        shared: SharedState,
        metrics: GuardMetrics,
        settings: GuardSettings,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self._metrics = metrics
        self._settings = settings
        replicas = settings.expected_replicas
        prefix = settings.key_prefix
        self.breaker = (
            CircuitBreaker(
                provider,
                policy,
                shared,
                metrics,
                key_prefix=prefix,
                is_health_failure=lambda exc: classify(exc).health_failure,
            )
            if policy.breaker
            else None
        )
        self.limiter = (
            RateLimiter(provider, policy, shared, metrics, replicas=replicas, key_prefix=prefix)
            if policy.rate is not None
            else None
        )
        self.bulkhead = (
            ConcurrencyLimiter(
                provider, policy, shared, metrics, replicas=replicas, key_prefix=prefix
            )
            if policy.concurrency is not None
            else None
        )
        self.budget = RetryBudget(
            policy.retry_budget_ratio,
            policy.retry_budget_min_per_s,
            policy.retry_budget_window_s,
            replicas,
        )
        self._backoff = wait_random_exponential(
            multiplier=policy.backoff_base_s, max=policy.backoff_max_s
        )

    # -- the one public entry ---------------------------------------------------------------
    async def call(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = False,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        scope: str | None = None,
    ) -> T:
        """Call `fn` (an async function making one request) under this provider's guard.

        `idempotent` (or an `idempotency_key` that the request carries) allows retries; any
        other call is attempted once. `timeout` bounds the whole call, retries included, on top
        of the inbound deadline. `scope` keys the rate and concurrency limits (e.g. a QuickBooks
        realm). Business errors (4xx) come back unchanged; the guard's own decisions and
        failures that outlasted the retries come back as MeshErrors (CircuitOpen, RateLimited,
        ProviderThrottled, ProviderUnavailable, ProviderDeadlineExceeded).
        """
        call = _Call(
            operation=operation,
            deadline=self._deadline(timeout),
            retry_allowed=idempotent or bool(idempotency_key),
            scope=scope,
        )
        self.budget.record_call()
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _AttemptFailed)),
            wait=self._wait,
            stop=lambda rs: self._stop(call, rs),
            before_sleep=lambda rs: self._before_sleep(call, rs),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result: T = await self._attempt(call, fn)
        except _AttemptFailed as failed:
            raise self._final_error(call, failed) from failed.cause
        return result

    # -- deadline ---------------------------------------------------------------------------
    def _deadline(self, timeout: float | None) -> float | None:
        now = time.monotonic()
        ends = []
        if timeout is not None:
            ends.append(now + timeout)
        inbound = current_call()
        remaining = inbound.time_remaining() if inbound is not None else None
        if remaining is not None:
            ends.append(now + remaining)
        return min(ends) - self._settings.deadline_margin_s if ends else None

    @staticmethod
    def _left(call: _Call) -> float | None:
        return None if call.deadline is None else call.deadline - time.monotonic()

    # -- one attempt ------------------------------------------------------------------------
    async def _attempt(self, call: _Call, fn: Callable[[], Awaitable[T]]) -> T:
        op = call.operation
        left = self._left(call)
        if left is not None and left < self._settings.min_attempt_s:
            self._count(op, "deadline")
            raise ProviderDeadlineExceeded(self.provider, op)
        ticket: Ticket | None = None
        if self.breaker is not None:
            try:
                ticket = await self.breaker.admit()
            except BreakerRejected as rejected:
                self._count(op, "circuit_open")
                raise CircuitOpen(self.provider, op, rejected.retry_after) from None
        call.outcome = NEUTRAL
        try:
            return await self._limited_attempt(call, fn)
        finally:
            if ticket is not None and self.breaker is not None:
                await self.breaker.record(ticket, call.outcome)

    async def _limited_attempt(self, call: _Call, fn: Callable[[], Awaitable[T]]) -> T:
        # Concurrency slot first, rate slot last: the request must leave right at its rate
        # slot — sent later, it would bunch with the next slots in the provider's window.
        op = call.operation
        with self._no_slot_errors(op):
            async with self._concurrency_slot(call):
                if self.limiter is not None:
                    waited = await self.limiter.acquire(self._max_wait(call), call.scope)
                    self._metrics.rate_wait.labels(self.provider).observe(waited)
                left = self._left(call)
                if left is not None and left < self._settings.min_attempt_s:
                    self._count(op, "deadline")
                    raise ProviderDeadlineExceeded(self.provider, op)
                return await self._send(call, fn, left)

    def _max_wait(self, call: _Call) -> float:
        left = self._left(call)
        if left is None:
            return self.policy.max_wait_s
        return max(0.0, min(self.policy.max_wait_s, left - self._settings.min_attempt_s))

    @contextlib.asynccontextmanager
    async def _concurrency_slot(self, call: _Call) -> AsyncIterator[None]:
        if self.bulkhead is None:
            yield
            return
        async with self.bulkhead.slot(self._max_wait(call), call.scope) as waited:
            if waited > 0:
                self._metrics.rate_wait.labels(self.provider).observe(waited)
            yield

    @contextlib.contextmanager
    def _no_slot_errors(self, op: str) -> Iterator[None]:
        try:
            yield
        except NoSlot as no_slot:
            self._metrics.rate_rejected.labels(self.provider).inc()
            self._count(op, "rate_limited")
            raise RateLimited(self.provider, op, no_slot.retry_after) from None
        except FallbackRejected:
            self._count(op, "state_unavailable")
            raise SharedStateUnavailable(self.provider, op) from None

    async def _send(self, call: _Call, fn: Callable[[], Awaitable[T]], left: float | None) -> T:
        op = call.operation
        limit = self.policy.attempt_timeout_s
        # A timeout cut short by the caller's deadline says nothing about the provider.
        cut_short = left is not None and left < limit
        started = time.perf_counter()
        timer = asyncio.timeout(min(limit, left) if left is not None else limit)
        try:
            async with timer:
                awaitable = fn()
                if not inspect.isawaitable(awaitable):
                    raise TypeError(
                        "guard.call needs an async function; run blocking SDK calls through "
                        "asyncio.to_thread inside it"
                    )
                result = await awaitable
            verdict = classify_result(result)
            if verdict.health_failure:
                raise FailedResponse(result, verdict)
        except Exception as exc:
            self._metrics.duration.labels(self.provider, op).observe(time.perf_counter() - started)
            verdict = classify(exc)
            out_of_time = cut_short and timer.expired()
            self._count(op, verdict.kind)
            if verdict.health_failure:
                call.outcome = NEUTRAL if out_of_time else FAILURE
                raise _AttemptFailed(exc, verdict, out_of_time=out_of_time) from exc
            # The provider answered (a 4xx, a decline): healthy. Anything else is not its fault.
            call.outcome = SUCCESS if verdict.kind == CLIENT_ERROR else NEUTRAL
            raise
        self._metrics.duration.labels(self.provider, op).observe(time.perf_counter() - started)
        self._count(op, verdict.kind)
        call.outcome = SUCCESS
        return result

    # -- tenacity hooks ---------------------------------------------------------------------
    def _wait(self, rs: RetryCallState) -> float:
        backoff = float(self._backoff(rs))
        exc = rs.outcome.exception() if rs.outcome is not None else None
        hint = exc.verdict.retry_after if isinstance(exc, _AttemptFailed) else None
        return max(backoff, hint) if hint is not None else backoff

    def _stop(self, call: _Call, rs: RetryCallState) -> bool:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        if not isinstance(exc, _AttemptFailed) or not exc.verdict.retryable:
            call.stop_reason = "not_retryable"
            return True
        if not call.retry_allowed:
            call.stop_reason = "not_idempotent"
            return True
        if rs.attempt_number >= self.policy.max_attempts:
            call.stop_reason = "attempts"
            return True
        sleep = rs.upcoming_sleep
        left = self._left(call)
        if left is not None and left - sleep < self._settings.min_attempt_s:
            call.stop_reason = "deadline"
            return True
        if left is None and sleep > self.policy.max_wait_s:
            call.stop_reason = "retry_after_too_long"
            return True
        if not self.budget.try_spend():
            self._metrics.budget_exhausted.labels(self.provider).inc()
            call.stop_reason = "budget"
            return True
        return False

    def _before_sleep(self, call: _Call, rs: RetryCallState) -> None:
        self._metrics.retries.labels(self.provider, call.operation).inc()
        exc = rs.outcome.exception() if rs.outcome is not None else None
        _log.info(
            "retrying provider call",
            extra={
                "provider": self.provider,
                "operation": call.operation,
                "attempt": rs.attempt_number,
                "sleep_s": round(rs.upcoming_sleep, 3),
                "error": exc.verdict.kind if isinstance(exc, _AttemptFailed) else None,
            },
        )

    def _final_error(self, call: _Call, failed: _AttemptFailed) -> Exception:
        op = call.operation
        verdict = failed.verdict
        _log.warning(
            "provider call failed",
            extra={
                "provider": self.provider,
                "operation": op,
                "error": verdict.kind,
                "status": verdict.status,
                "stopped": call.stop_reason,
            },
        )
        if failed.out_of_time:
            return ProviderDeadlineExceeded(self.provider, op)
        if verdict.kind == THROTTLED:
            return ProviderThrottled(self.provider, op, verdict.retry_after)
        detail = f"{verdict.kind} {verdict.status}" if verdict.status else verdict.kind
        retry_after = verdict.retry_after
        if retry_after is None:
            retry_after = self.policy.backoff_base_s
        return ProviderUnavailable(self.provider, op, retry_after, detail)

    def _count(self, operation: str, outcome: str) -> None:
        self._metrics.requests.labels(self.provider, operation, outcome).inc()


class Guards(Mapping[str, Guard]):
    """Every provider's guard in a process, built once at start from one policy table."""

    def __init__(
        self,
        redis: aioredis.Redis,
        registry: CollectorRegistry,
        settings: GuardSettings | None = None,
    ) -> None:
        self.settings = settings or GuardSettings()
        self.metrics = GuardMetrics.for_registry(registry)
        self.shared = SharedState(
            redis,
            self.metrics,
            timeout_s=self.settings.redis_timeout_s,
            retry_s=self.settings.redis_retry_s,
        )
        self._guards = {
            name: Guard(name, policy, self.shared, self.metrics, self.settings)
            for name, policy in self.settings.policies.items()
        }

    def __getitem__(self, provider: str) -> Guard:
        try:
            return self._guards[provider]
        except KeyError:
            known = ", ".join(sorted(self._guards))
            raise KeyError(f"no guard for provider {provider!r} (known: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._guards)

    def __len__(self) -> int:
        return len(self._guards)

    async def aclose(self) -> None:
        """Close the guards' Redis client."""
        await self.shared.redis.aclose()


def connect_guard_redis(url: str, settings: GuardSettings) -> aioredis.Redis:
    """A Redis client for the guards: short timeouts and one immediate reconnect attempt, so a
    dead Redis turns into the fallback quickly instead of stalling provider calls."""
    client: aioredis.Redis = aioredis.from_url(
        url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    return client
