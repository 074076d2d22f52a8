"""Access to the guards' shared state in Redis, and what happens when Redis is unreachable.

Every shared decision is one Lua script (one round trip, atomic, Redis `TIME` as the clock, so
replicas need no clock agreement). When a script fails with a connection error or times out, the
process marks Redis down, logs it once, and for `redis_retry_s` every guard decides locally under
its provider's fallback policy without trying Redis (a dead Redis must not add a timeout to each
provider call). The first call after that window tries Redis again; when it answers, sharing
resumes and that is logged once too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from meshkit.resilience._metrics import GuardMetrics

_log = logging.getLogger("meshkit.resilience")

_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


class SharedStateDown(Exception):
    """Redis is (recently) unreachable: decide under the fallback policy."""


class SharedState:
    """Runs the guards' Lua scripts and tracks whether Redis is reachable."""

    def __init__(
        self,
        redis: aioredis.Redis,
        metrics: GuardMetrics,
        *,
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self._metrics = metrics
        self._timeout = timeout_s
        self._retry_s = retry_s
        self._down_until = 0.0
        self._down = False
        self._scripts: dict[str, Any] = {}

    @property
    def up(self) -> bool:
        return not self._down

    def script(self, name: str, source: str) -> None:
        """Register a script once (EVALSHA, reloaded automatically after a Redis restart)."""
        if name not in self._scripts:
            self._scripts[name] = self.redis.register_script(source)

    async def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a registered script; SharedStateDown when Redis is unreachable."""
        if self._down and time.monotonic() < self._down_until:
            raise SharedStateDown
        try:
            async with asyncio.timeout(self._timeout):
                result = await self._scripts[name](keys=list(keys), args=list(args))
        except _DOWN_ERRORS as exc:
            self._mark_down(exc)
            raise SharedStateDown from exc
        if self._down:
            self._down = False
            self._metrics.shared_up.set(1)
            _log.warning("guard shared state reachable again: limits and breakers shared")
        return result

    def _mark_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_s
        if not self._down:
            self._down = True
            self._metrics.shared_up.set(0)
            _log.error(
                "guard shared state unreachable: deciding locally under each provider's "
                "fallback policy",
                extra={"error": repr(exc), "retry_s": self._retry_s},
            )
