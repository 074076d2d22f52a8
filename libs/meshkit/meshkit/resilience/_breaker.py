"""A circuit breaker on pybreaker that is correct under asyncio and shared by every replica.

pybreaker alone cannot do this: `CircuitBreaker.call(async_fn)` returns the coroutine without
awaiting it (failures are never counted), its Redis storage is synchronous (it would block the
event loop) and read-then-compare (not atomic), it counts consecutive failures only, and half-open
lets every call through. So the split is:

* the **decisions** are atomic Lua scripts on one Redis hash per provider (`admit` before a call,
  `record` after it is awaited): open on `fail_max` consecutive health failures or on a failure
  rate over a sliding window (ring of 10 buckets) once it holds `min_calls`; after
  `reset_timeout_s` the first caller moves it to half-open, where at most `half_open_probes` calls
  hold a probe lease at once (a lease expires, so a probe lost with its process frees its slot);
  `success_threshold` successful probes close it, one failed probe reopens it. A generation
  number, bumped on every transition, makes outcomes of calls admitted under an earlier state
  count for nothing;
* **pybreaker** holds this process's view of the state: its storage is a mirror fed by the
  scripts' answers, and pybreaker's own "state changed elsewhere" check fires the listeners, which
  log the change and set `circuit_breaker_state`. Its `exclude` predicate is the guard's
  classifier, so only health failures (timeouts, connection errors, 5xx, 429) count: a card
  decline or any other 4xx is the provider working;
* while Redis is unreachable the same state machine runs in process (`LocalBreakerState`, seeded
  from the last shared state), so a failing provider still trips the breaker.

While the mirror says open, calls fail fast locally until the reset time, without a round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import pybreaker

from meshkit.resilience._metrics import BREAKER_STATE_VALUE, GuardMetrics
from meshkit.resilience._policy import ProviderPolicy
from meshkit.resilience._shared import SharedState, SharedStateDown

_log = logging.getLogger("meshkit.resilience")

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = {
    CLOSED: pybreaker.STATE_CLOSED,
    OPEN: pybreaker.STATE_OPEN,
    HALF_OPEN: pybreaker.STATE_HALF_OPEN,
}
SUCCESS, FAILURE, NEUTRAL = 1, 0, 2
BUCKETS = 10
_MICRO = 1_000_000

ADMIT_LUA = """
local k = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', k, 'st', 'gen', 'until', 'pr', 'pexp')
local st = tonumber(v[1]) or 0
local gen = tonumber(v[2]) or 0
if st == 0 then return {0, 1, 0, gen, 0, now} end
local pr = tonumber(v[4]) or 0
local pexp = tonumber(v[5]) or 0
if st == 1 then
  local untl = tonumber(v[3]) or 0
  if now < untl then return {1, 0, 0, gen, untl - now, now} end
  st = 2
  gen = gen + 1
  pr = 0
  redis.call('HSET', k, 'st', 2, 'gen', gen, 'pr', 0, 'pok', 0, 'pexp', 0)
end
if pr > 0 and now > pexp then pr = 0 end
if pr < tonumber(ARGV[1]) then
  redis.call('HSET', k, 'pr', pr + 1, 'pexp', string.format('%d', now + tonumber(ARGV[2])))
  return {2, 1, 1, gen, 0, now}
end
return {2, 0, 0, gen, pexp - now, now}
"""

RECORD_LUA = """
local k = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', k, 'st', 'gen', 'until', 'pr', 'pok', 'cf')
local st = tonumber(v[1]) or 0
local gen = tonumber(v[2]) or 0
local untl = tonumber(v[3]) or 0
local outcome = tonumber(ARGV[2])
local reset = tonumber(ARGV[9])
local nb = tonumber(ARGV[8])
local function clear_window()
  local f = {}
  for j = 0, nb - 1 do
    f[#f + 1] = 'e' .. j
    f[#f + 1] = 's' .. j
    f[#f + 1] = 'f' .. j
  end
  redis.call('HDEL', k, unpack(f))
end
local function open()
  gen = gen + 1
  redis.call('HSET', k, 'st', 1, 'gen', gen, 'until', string.format('%d', now + reset),
             'pr', 0, 'pok', 0, 'cf', 0)
  clear_window()
  return {1, gen, reset, now}
end
if tonumber(ARGV[1]) ~= gen then
  local left = 0
  if st == 1 and untl > now then left = untl - now end
  return {st, gen, left, now}
end
if st == 2 then
  local pr = tonumber(v[4]) or 0
  if ARGV[3] == '1' and pr > 0 then pr = pr - 1 end
  if outcome == 0 then return open() end
  if outcome == 1 then
    local pok = (tonumber(v[5]) or 0) + 1
    if pok >= tonumber(ARGV[10]) then
      gen = gen + 1
      redis.call('HSET', k, 'st', 0, 'gen', gen, 'pr', 0, 'pok', 0, 'cf', 0)
      clear_window()
      return {0, gen, 0, now}
    end
    redis.call('HSET', k, 'pr', pr, 'pok', pok)
  else
    redis.call('HSET', k, 'pr', pr)
  end
  return {2, gen, 0, now}
end
if st ~= 0 or outcome == 2 then
  local left = 0
  if st == 1 and untl > now then left = untl - now end
  return {st, gen, left, now}
end
local width = tonumber(ARGV[7])
local epoch = math.floor(now / width)
local i = epoch % nb
if tonumber(redis.call('HGET', k, 'e' .. i) or -1) ~= epoch then
  redis.call('HSET', k, 'e' .. i, epoch, 's' .. i, 0, 'f' .. i, 0)
end
local cf = tonumber(v[6]) or 0
if outcome == 1 then
  redis.call('HINCRBY', k, 's' .. i, 1)
  redis.call('HSET', k, 'cf', 0)
  return {0, gen, 0, now}
end
redis.call('HINCRBY', k, 'f' .. i, 1)
cf = cf + 1
redis.call('HSET', k, 'cf', cf)
if cf >= tonumber(ARGV[4]) then return open() end
local fields = {}
for j = 0, nb - 1 do
  fields[#fields + 1] = 'e' .. j
  fields[#fields + 1] = 's' .. j
  fields[#fields + 1] = 'f' .. j
end
local w = redis.call('HMGET', k, unpack(fields))
local total, fails = 0, 0
for j = 0, nb - 1 do
  local e = tonumber(w[3 * j + 1])
  if e and e > epoch - nb then
    total = total + (tonumber(w[3 * j + 2]) or 0) + (tonumber(w[3 * j + 3]) or 0)
    fails = fails + (tonumber(w[3 * j + 3]) or 0)
  end
end
if total >= tonumber(ARGV[6]) and fails * 1000 >= tonumber(ARGV[5]) * total then
  return open()
end
return {0, gen, 0, now}
"""


class BreakerRejected(Exception):
    """The breaker refused the call; `retry_after` is the time until it may admit one."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit open for {retry_after:.3f}s")
        self.retry_after = max(0.0, retry_after)


class Ticket(NamedTuple):
    """What `admit` hands out and `record` takes back."""

    gen: int
    probe: bool
    shared: bool


@dataclass(slots=True)
class LocalBreakerState:
    """The scripts' state machine in process (the fallback while Redis is unreachable).

    Kept line for line equivalent to ADMIT_LUA / RECORD_LUA; times are `time.monotonic()`.
    """

    policy: ProviderPolicy
    state: int = CLOSED
    gen: int = 0
    until: float = 0.0
    probes: int = 0
    probe_ok: int = 0
    probe_expiry: float = 0.0
    consecutive: int = 0
    buckets: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def seed(self, state: int, until: float) -> None:
        """Continue from the last shared state (called when switching to local decisions)."""
        self.gen += 1
        self.state = OPEN if state == HALF_OPEN else state
        self.until = until if state == OPEN else time.monotonic()
        self.probes = self.probe_ok = self.consecutive = 0
        self.buckets.clear()

    def admit(self, now: float) -> tuple[int, bool, bool, int, float]:
        """(state, allowed, probe, gen, retry_after_s)."""
        if self.state == CLOSED:
            return CLOSED, True, False, self.gen, 0.0
        if self.state == OPEN:
            if now < self.until:
                return OPEN, False, False, self.gen, self.until - now
            self.state, self.gen, self.probes, self.probe_ok = HALF_OPEN, self.gen + 1, 0, 0
            self.probe_expiry = 0.0
        if self.probes > 0 and now > self.probe_expiry:
            self.probes = 0
        if self.probes < self.policy.half_open_probes:
            self.probes += 1
            self.probe_expiry = now + _probe_lease_s(self.policy)
            return HALF_OPEN, True, True, self.gen, 0.0
        return HALF_OPEN, False, False, self.gen, self.probe_expiry - now

    def _open(self, now: float) -> tuple[int, int, float]:
        self.state, self.gen = OPEN, self.gen + 1
        self.until = now + self.policy.reset_timeout_s
        self.probes = self.probe_ok = self.consecutive = 0
        self.buckets.clear()
        return OPEN, self.gen, self.policy.reset_timeout_s

    def record(self, gen: int, outcome: int, probe: bool, now: float) -> tuple[int, int, float]:
        """(state, gen, retry_after_s) after an outcome of a call admitted under `gen`."""
        left = max(0.0, self.until - now) if self.state == OPEN else 0.0
        if gen != self.gen:
            return self.state, self.gen, left
        if self.state == HALF_OPEN:
            if probe and self.probes > 0:
                self.probes -= 1
            if outcome == FAILURE:
                return self._open(now)
            if outcome == SUCCESS:
                self.probe_ok += 1
                if self.probe_ok >= self.policy.success_threshold:
                    self.state, self.gen = CLOSED, self.gen + 1
                    self.probes = self.probe_ok = self.consecutive = 0
                    self.buckets.clear()
                    return CLOSED, self.gen, 0.0
            return HALF_OPEN, self.gen, 0.0
        if self.state != CLOSED or outcome == NEUTRAL:
            return self.state, self.gen, left
        width = self.policy.window_s / BUCKETS
        epoch = int(now // width)
        e, s, f = self.buckets.get(epoch % BUCKETS, (-1, 0, 0))
        if e != epoch:
            s = f = 0
        if outcome == SUCCESS:
            self.buckets[epoch % BUCKETS] = (epoch, s + 1, f)
            self.consecutive = 0
            return CLOSED, self.gen, 0.0
        self.buckets[epoch % BUCKETS] = (epoch, s, f + 1)
        self.consecutive += 1
        if self.consecutive >= self.policy.fail_max:
            return self._open(now)
        live = [(bs, bf) for be, bs, bf in self.buckets.values() if be > epoch - BUCKETS]
        total = sum(bs + bf for bs, bf in live)
        fails = sum(bf for _, bf in live)
        if total >= self.policy.min_calls and fails * 1000 >= _permille(self.policy) * total:
            return self._open(now)
        return CLOSED, self.gen, 0.0


def _permille(policy: ProviderPolicy) -> int:
    return round(policy.failure_rate * 1000)


def _probe_lease_s(policy: ProviderPolicy) -> float:
    # A probe holds its slot for at most one attempt (plus slack); then the slot is free again.
    return policy.attempt_timeout_s + 1.0


class _MirrorStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage holding this process's view of the shared state (no I/O: the state
    arrives with the scripts' answers, so pybreaker never blocks the event loop)."""

    def __init__(self) -> None:
        super().__init__("mirror")
        self._state = pybreaker.STATE_CLOSED
        self._opened_at: datetime | None = None
        self._failures = 0
        self._successes = 0

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state

    def increment_counter(self) -> None:
        self._failures += 1

    def reset_counter(self) -> None:
        self._failures = 0

    def increment_success_counter(self) -> None:
        self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return self._failures

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return self._opened_at

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._opened_at = value


class _StateListener(pybreaker.CircuitBreakerListener):
    """Logs and meters every state change this process sees (its own or another replica's)."""

    def __init__(self, provider: str, metrics: GuardMetrics) -> None:
        self._provider = provider
        self._metrics = metrics

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        name = new_state.name
        self._metrics.breaker_state.labels(self._provider).set(BREAKER_STATE_VALUE[name])
        self._metrics.breaker_transitions.labels(self._provider, name).inc()
        level = logging.WARNING if name == pybreaker.STATE_OPEN else logging.INFO
        _log.log(
            level,
            "circuit breaker state changed",
            extra={
                "provider": self._provider,
                "from_state": old_state.name if old_state is not None else None,
                "to_state": name,
            },
        )


class CircuitBreaker:
    """One provider's breaker: `admit()` before an attempt, `record()` after awaiting it."""

    def __init__(
        self,
        provider: str,
        policy: ProviderPolicy,
        shared: SharedState,
        metrics: GuardMetrics,
        *,
        key_prefix: str,
        is_health_failure: Callable[[BaseException], bool],
    ) -> None:
        self.provider = provider
        self._policy = policy
        self._shared = shared
        self._key = f"{key_prefix}:cb:{provider}"
        self._mirror = _MirrorStorage()
        self._pb = pybreaker.CircuitBreaker(
            fail_max=policy.fail_max,
            reset_timeout=policy.reset_timeout_s,
            success_threshold=policy.success_threshold,
            exclude=[lambda exc: not is_health_failure(exc)],
            listeners=[_StateListener(provider, metrics)],
            state_storage=self._mirror,
            name=provider,
        )
        metrics.breaker_state.labels(provider).set(0)
        self._metrics = metrics
        self._local = LocalBreakerState(policy)
        self._shared_mode = True
        self._open_until = 0.0
        # Redis TIME (us) of the newest shared answer applied: concurrent calls' answers can be
        # processed out of the order Redis executed them in, and an older answer must not set
        # the mirror back (e.g. "closed" after the answer that opened the breaker).
        self._applied_at_us = 0
        self._record_args = [
            policy.fail_max,
            _permille(policy),
            policy.min_calls,
            int(policy.window_s / BUCKETS * _MICRO),
            BUCKETS,
            int(policy.reset_timeout_s * _MICRO),
            policy.success_threshold,
        ]
        self._admit_args = [policy.half_open_probes, int(_probe_lease_s(policy) * _MICRO)]
        shared.script("cb_admit", ADMIT_LUA)
        shared.script("cb_record", RECORD_LUA)

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open`, as last seen by this process."""
        return str(self._pb.state.name)

    def is_health_failure(self, exc: BaseException) -> bool:
        """Whether `exc` says the provider is unhealthy (pybreaker's system-error test)."""
        return bool(self._pb.is_system_error(exc))

    def _apply_shared(self, state: int, retry_after: float, executed_at_us: int) -> None:
        if executed_at_us < self._applied_at_us:
            return  # an answer older than one already applied
        self._applied_at_us = executed_at_us
        self._apply(state, retry_after)

    def _apply(self, state: int, retry_after: float) -> None:
        now = time.monotonic()
        name = STATE_NAMES[state]
        if state == OPEN:
            self._open_until = now + retry_after
            if self._mirror.state != name:
                self._mirror.opened_at = datetime.now(UTC)
        self._mirror.state = name
        self._pb.state  # noqa: B018 - pybreaker notices the change and notifies its listeners

    async def admit(self) -> Ticket:
        """A ticket for one attempt, or BreakerRejected (fails fast while open)."""
        now = time.monotonic()
        if self._mirror.state == pybreaker.STATE_OPEN and now < self._open_until:
            raise BreakerRejected(self._open_until - now)
        try:
            st, allowed, probe, gen, retry_us, at_us = await self._shared.run(
                "cb_admit", [self._key], self._admit_args
            )
            self._shared_mode = True
            retry_after = retry_us / _MICRO
            ticket = Ticket(int(gen), bool(probe), True)
            self._apply_shared(int(st), retry_after, int(at_us))
        except SharedStateDown:
            self._enter_local()
            st, allowed, probe, gen, retry_after = self._local.admit(time.monotonic())
            self._metrics.fallback.labels(self.provider, "breaker").inc()
            ticket = Ticket(gen, probe, False)
            self._apply(int(st), retry_after)
        if not allowed:
            raise BreakerRejected(retry_after)
        return ticket

    async def record(self, ticket: Ticket, outcome: int) -> None:
        """Record an awaited attempt's outcome: SUCCESS, FAILURE or NEUTRAL (not a signal)."""
        if ticket.shared:
            try:
                st, _gen, retry_us, at_us = await self._shared.run(
                    "cb_record",
                    [self._key],
                    [ticket.gen, outcome, int(ticket.probe), *self._record_args],
                )
                self._apply_shared(int(st), retry_us / _MICRO, int(at_us))
                return
            except SharedStateDown:
                self._enter_local()
                ticket = Ticket(self._local.gen, False, False)
        st, _gen, retry_after = self._local.record(
            ticket.gen, outcome, ticket.probe, time.monotonic()
        )
        self._apply(st, retry_after)

    def _enter_local(self) -> None:
        if self._shared_mode:
            self._shared_mode = False
            state = {v: k for k, v in STATE_NAMES.items()}[self._mirror.state]
            self._local.seed(state, self._open_until)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one awaited attempt through the breaker (no retries, no limits)."""
        ticket = await self.admit()
        try:
            result = await fn()
        except Exception as exc:
            # Anything but a health failure (a 4xx, a decline) means the provider answered.
            await self.record(ticket, FAILURE if self.is_health_failure(exc) else SUCCESS)
            raise
        except BaseException:
            await self.record(ticket, NEUTRAL)  # cancelled: says nothing about the provider
            raise
        await self.record(ticket, SUCCESS)
        return result
