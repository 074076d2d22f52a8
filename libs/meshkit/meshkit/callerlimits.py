"""Per-caller request limits (e.g. refunds: 5 per minute per caller), shared by every replica.

Build one per limit with `kit.caller_limiter(name, limit, window_s)` and call
`await limiter.check(subject)` where the use case starts; over the limit it raises
RESOURCE_EXHAUSTED with RetryInfo saying when the oldest request in the window leaves it.

A sliding-window log in one Lua script: exact over any window (a fixed window would let twice
the limit through around its boundary), one Redis round trip per decision, and a refused request
learns when the oldest request in the window expires (its retry-after).
"""

from __future__ import annotations

import time
import uuid

import redis.asyncio as aioredis

from meshkit.errors import ResourceExhausted

_SLIDING_WINDOW_LUA = """
local window_us = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local member = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window_us)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window_us - now}
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], math.ceil(window_us / 1000))
return {1, 0}
"""


class CallerRateLimiter:
    """`await limiter.check(subject)` raises RESOURCE_EXHAUSTED (with RetryInfo) over the limit;
    a limit of 0 or less allows everything."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        name: str,
        limit: int,
        window_s: float = 60.0,
        key_prefix: str = "callers",
    ) -> None:
        self._redis = redis
        self._name = name
        self.limit = limit
        self.window_s = window_s
        self._window_us = int(window_s * 1_000_000)
        self._prefix = f"{key_prefix}:{name}"
        self._script = redis.register_script(_SLIDING_WINDOW_LUA)

    async def check(self, subject: str) -> None:
        if self.limit <= 0:
            return
        key = f"{self._prefix}:{subject}"
        member = f"{time.time_ns()}:{uuid.uuid4().hex[:8]}"
        allowed, retry_us = await self._script(
            keys=[key], args=[self._window_us, self.limit, member]
        )
        if not int(allowed):
            raise ResourceExhausted(
                f"too many {self._name} requests; at most {self.limit} per {self.window_s:g} s",
                reason="RATE_LIMITED",
                metadata={"limit": str(self.limit)},
                retry_after=max(0.001, int(retry_us) / 1_000_000),
            )
