"""Redis stopped mid-run: calls go on under the fallback policy, and sharing resumes after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from meshdev.embedded import EmbeddedRedis, free_port
from meshdev.standins.provider import ProviderStandIn, max_in_window
from meshkit.errors import MeshError
from meshkit.resilience import Guard, Guards, GuardSettings, ProviderPolicy, connect_guard_redis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (on a fixed port) that the test may stop and restart."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _load(guard: Guard, client: httpx.AsyncClient, url: str, seconds: float) -> list[str]:
    """Four callers in a loop for `seconds`; the reasons of any errors they met."""
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < stop_at:
            try:
                await guard.call("get", lambda: client.get(url), idempotent=True)
            except MeshError as exc:
                errors.append(exc.reason)

    await asyncio.gather(*(caller() for _ in range(4)))
    return errors


def _rate(times: list[float], since: float) -> tuple[float, int]:
    window = [t for t in times if t >= since]
    return (len(window) - 1) / (window[-1] - window[0]), max_in_window(window, 1.0)


async def test_redis_stopped_mid_run_then_back(
    own_redis: EmbeddedRedis, standin: ProviderStandIn
) -> None:
    limit = 20
    settings = GuardSettings(
        # 100 ms of jitter allowance: the test machine is shared and busy (see test_ratelimit).
        policies={"standin": ProviderPolicy(rate=limit, concurrency=8, jitter_s=0.1)},
        expected_replicas=2,
        redis_retry_s=0.2,
    )
    guards = Guards(connect_guard_redis(own_redis.url, settings), CollectorRegistry(), settings)
    guard = guards["standin"]
    shared_up = guards.metrics.shared_up
    fallback = guards.metrics.fallback.labels("standin", "rate_limit")
    inspect = aioredis.from_url(own_redis.url)
    url = standin.url + "/v1/thing"
    standin.clear()
    try:
        async with httpx.AsyncClient() as client:
            # 1. Shared: the whole limit, decided in Redis.
            assert await _load(guard, client, url, 1.5) == []
            rate, peak = _rate(standin.times(), 0.0)
            assert peak <= limit and rate > 0.8 * limit
            assert await inspect.exists("guard:rl:standin")

            # 2. Redis stops: no call fails, this replica keeps to its share (limit / 2).
            own_redis.stop()
            outage = time.monotonic()
            assert await _load(guard, client, url, 2.0) == []
            rate, peak = _rate(standin.times(), outage)
            assert peak <= limit / 2 and rate > 0.75 * limit / 2
            assert shared_up._value.get() == 0  # type: ignore[attr-defined]
            assert fallback._value.get() > 0  # type: ignore[attr-defined]

            # 3. Redis is back: sharing resumes (the whole limit again, state in Redis). The
            # restarted Redis lost the limiter's state, and slots booked locally are still being
            # served for a moment, so the limit is checked from a second after the switch.
            own_redis.start()  # from the main thread: it dies with the test run
            await asyncio.sleep(settings.redis_retry_s)
            fallback_before = fallback._value.get()  # type: ignore[attr-defined]
            back = time.monotonic()
            assert await _load(guard, client, url, 2.5) == []
            assert shared_up._value.get() == 1  # type: ignore[attr-defined]
            assert fallback._value.get() - fallback_before <= 1  # type: ignore[attr-defined]
            rate, peak = _rate(standin.times(), back + 1.0)
            assert peak <= limit and rate > 0.8 * limit
            await inspect.aclose()
            inspect = aioredis.from_url(own_redis.url)
            assert await inspect.exists("guard:rl:standin", "guard:cb:standin") == 2
    finally:
        await inspect.aclose()
        await guards.aclose()
