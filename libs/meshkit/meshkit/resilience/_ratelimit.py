"""Shared rate limit (GCRA) and shared concurrency cap, each one Lua script per decision.

Rate limit — GCRA ("generic cell rate algorithm", the shape of go-redis/redis_rate's `allow_n`)
with reservation: the key holds the theoretical arrival time (TAT) in microseconds of Redis
`TIME`. A call that fits inside its caller's patience *books* the next slot (TAT moves on by one
emission interval) and learns how long to sleep until that slot; a call that would have to wait
longer books nothing and gets the wait as its retry-after. Slots are therefore spaced exactly one
emission interval apart whatever the number of replicas, callers do not poll, and no window of
`period_s` ever holds more than `rate` requests (the interval is derived from `rate`, `burst` and a
jitter allowance in `ProviderPolicy.emission_interval_s`). Fixed windows, by contrast, let up to
twice the limit through around a window boundary.

Each process also remembers "no slot before t" from the last answer: TAT only moves forward, so a
caller that cannot wait that long is refused locally without a round trip — a throttled process
does not hammer Redis.

Concurrency cap (bulkhead) — a sorted set of leases scored by expiry; a lease outlives the longest
possible attempt, so a replica that dies holding slots gives them back when its leases expire.

When Redis is unreachable both fall back per policy; `local` runs the same algorithms in process
with this replica's share of the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from meshkit.resilience._metrics import GuardMetrics
from meshkit.resilience._policy import ProviderPolicy
from meshkit.resilience._shared import SharedState, SharedStateDown

GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst_offset = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local wait = new_tat - burst_offset - now
if wait < 0 then wait = 0 end
if wait > max_wait then
  return {0, wait, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1000)
return {1, wait, new_tat - now}
"""

SEMAPHORE_ACQUIRE_LUA = """
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], string.format('%d', now + lease), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000) + 1000)
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(first[2]) - now}
"""

SEMAPHORE_RELEASE_LUA = "return redis.call('ZREM', KEYS[1], ARGV[1])"

_MICRO = 1_000_000
_CACHE_LIMIT = 4096


class NoSlot(Exception):
    """No rate/concurrency slot within the caller's patience; `retry_after` says when."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"no slot for {retry_after:.3f}s")
        self.retry_after = max(0.0, retry_after)


class FallbackRejected(Exception):
    """Redis is unreachable and the provider's fallback policy is `reject`."""


@dataclass(slots=True)
class LocalGcra:
    """The same GCRA with reservation, in process (the fallback).

    Integer nanoseconds, like the script's integer microseconds: float sums drift, and a slot
    that drifts onto a window's edge would put one request too many in that window.
    """

    interval_ns: int
    burst_offset_ns: int
    tat_ns: int = 0

    @classmethod
    def for_policy(cls, policy: ProviderPolicy) -> LocalGcra:
        interval = math.ceil(policy.emission_interval_s() * 1e9)
        return cls(interval, interval * policy.burst)

    def reserve(self, max_wait: float, now_ns: int | None = None) -> float:
        """Book a slot and return the wait (s) until it; NoSlot if further than `max_wait`."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        tat = max(self.tat_ns, now)
        new_tat = tat + self.interval_ns
        wait = max(0, new_tat - self.burst_offset_ns - now)
        if wait > max_wait * 1e9:
            raise NoSlot(wait / 1e9)
        self.tat_ns = new_tat
        return wait / 1e9


def _trim(cache: dict[str, float], now: float) -> None:
    if len(cache) > _CACHE_LIMIT:
        for key in [k for k, v in cache.items() if v <= now]:
            del cache[key]


class RateLimiter:
    """One provider's shared rate limit (per scope, e.g. per QuickBooks realm)."""

    def __init__(
        self,
        provider: str,
        policy: ProviderPolicy,
        shared: SharedState,
        metrics: GuardMetrics,
        *,
        replicas: int,
        key_prefix: str,
    ) -> None:
        assert policy.rate is not None
        self.provider = provider
        self._policy = policy
        self._shared = shared
        self._metrics = metrics
        self._prefix = f"{key_prefix}:rl:{provider}"
        interval = policy.emission_interval_s()
        # Whole microseconds, rounded up: rounding may only ever slow the pace down.
        self._interval_us = math.ceil(interval * _MICRO)
        self._burst_offset_us = self._interval_us * policy.burst
        self._next_free: dict[str, float] = {}
        # Half the jitter allowance may go to waking up late for a slot, the rest to the
        # network; later than that the slot is given up (see `acquire`).
        self._late_s = max(policy.jitter_s / 2, 0.005)
        self._local_policy = policy.local_share(replicas)
        self._local: dict[str, LocalGcra] = {}
        shared.script("gcra", GCRA_LUA)

    def _key(self, scope: str | None) -> str:
        return f"{self._prefix}:{scope}" if scope else self._prefix

    async def acquire(self, max_wait: float, scope: str | None = None) -> float:
        """Wait for this call's slot (shared by every replica) and return the time waited.

        NoSlot when no slot is free within `max_wait`; FallbackRejected when Redis is down and
        the fallback policy is `reject`. A caller that wakes up too long after its slot (a
        stalled process) does not send late — that would bunch its request with the next
        slots — but books a new slot within what is left of `max_wait`.
        """
        key = self._key(scope)
        started = time.monotonic()
        give_up_at = started + max(0.0, max_wait)
        while True:
            wait = await self._reserve(key, max(0.0, give_up_at - time.monotonic()))
            if wait <= 0:
                return time.monotonic() - started
            slot_at = time.monotonic() + wait
            await asyncio.sleep(wait)
            if time.monotonic() - slot_at <= self._late_s:
                return time.monotonic() - started
            self._metrics.missed_slots.labels(self.provider).inc()

    async def _reserve(self, key: str, max_wait: float) -> float:
        """Book a slot within `max_wait`; the wait until it (shared, else the fallback)."""
        now = time.monotonic()
        next_free = self._next_free.get(key, 0.0)
        if next_free - now > max_wait:
            raise NoSlot(next_free - now)
        try:
            allowed, wait_us, backlog_us = await self._shared.run(
                "gcra",
                [key],
                [self._interval_us, self._burst_offset_us, 1, int(max_wait * _MICRO)],
            )
        except SharedStateDown:
            return self._acquire_fallback(key, max_wait)
        received = time.monotonic()
        # The earliest slot a later call could get, as a local time (TAT only grows).
        self._next_free[key] = (
            received + (backlog_us + self._interval_us - self._burst_offset_us) / _MICRO
        )
        _trim(self._next_free, received)
        if not allowed:
            raise NoSlot(wait_us / _MICRO)
        return float(wait_us / _MICRO)

    def _acquire_fallback(self, key: str, max_wait: float) -> float:
        mode = self._policy.fallback
        self._metrics.fallback.labels(self.provider, "rate_limit").inc()
        if mode == "allow":
            return 0.0
        if mode == "reject":
            raise FallbackRejected
        local = self._local.get(key)
        if local is None:
            local = LocalGcra.for_policy(self._local_policy)
            self._local[key] = local
        return local.reserve(max_wait)


class ConcurrencyLimiter:
    """One provider's shared cap on requests in flight (per scope)."""

    _POLL_MIN_S = 0.01
    _POLL_MAX_S = 0.1

    def __init__(
        self,
        provider: str,
        policy: ProviderPolicy,
        shared: SharedState,
        metrics: GuardMetrics,
        *,
        replicas: int,
        key_prefix: str,
    ) -> None:
        assert policy.concurrency is not None
        self.provider = provider
        self._policy = policy
        self._limit = policy.concurrency
        self._local_limit = policy.local_share(replicas).concurrency or 1
        self._shared = shared
        self._metrics = metrics
        self._prefix = f"{key_prefix}:cc:{provider}"
        # A lease outlives the longest hold (a wait for the rate slot, then one attempt), so a
        # dead holder's slot comes back by itself.
        self._lease_us = int((policy.max_wait_s + policy.attempt_timeout_s + 5.0) * _MICRO)
        self._released = asyncio.Event()
        self._local: dict[str, asyncio.Semaphore] = {}
        shared.script("sem_acquire", SEMAPHORE_ACQUIRE_LUA)
        shared.script("sem_release", SEMAPHORE_RELEASE_LUA)

    def _key(self, scope: str | None) -> str:
        return f"{self._prefix}:{scope}" if scope else self._prefix

    @asynccontextmanager
    async def slot(self, max_wait: float, scope: str | None = None) -> AsyncIterator[float]:
        """Hold one slot for the body; yields the time waited. NoSlot past `max_wait`."""
        key = self._key(scope)
        token = uuid.uuid4().hex
        started = time.monotonic()
        deadline = started + max(0.0, max_wait)
        poll = self._POLL_MIN_S
        shared = True
        while True:
            try:
                granted, hint_us = await self._shared.run(
                    "sem_acquire", [key], [self._limit, self._lease_us, token]
                )
            except SharedStateDown:
                shared = False
                break
            if granted:
                break
            now = time.monotonic()
            if now >= deadline:
                raise NoSlot(min(hint_us / _MICRO, poll))
            self._released.clear()
            # Another replica's release is only seen by polling; a local one wakes us at once.
            try:
                async with asyncio.timeout(min(poll, deadline - now)):
                    await self._released.wait()
            except TimeoutError:
                pass
            poll = min(poll * 2, self._POLL_MAX_S)
        if not shared:
            async with self._fallback_slot(key, deadline):
                yield time.monotonic() - started
            return
        try:
            yield time.monotonic() - started
        finally:
            with contextlib.suppress(SharedStateDown):  # else the lease expires by itself
                await self._shared.run("sem_release", [key], [token])
            self._released.set()

    @asynccontextmanager
    async def _fallback_slot(self, key: str, deadline: float) -> AsyncIterator[None]:
        mode = self._policy.fallback
        self._metrics.fallback.labels(self.provider, "concurrency").inc()
        if mode == "allow":
            yield
            return
        if mode == "reject":
            raise FallbackRejected
        sem = self._local.get(key)
        if sem is None:
            sem = asyncio.Semaphore(self._local_limit)
            self._local[key] = sem
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await sem.acquire()
        except TimeoutError:
            raise NoSlot(self._POLL_MIN_S) from None
        try:
            yield
        finally:
            sem.release()
