"""The shared rate limit and concurrency cap against real Redis, a stand-in and real processes."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest
import redis.asyncio as aioredis

from meshdev.standins.provider import ProviderStandIn, Reply
from meshkit.resilience import ProviderPolicy, RateLimited
from tests.kit.integration.resilience.conftest import GuardsFactory, Replicas, total


async def _evalsha_calls(redis_client: aioredis.Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(
        stats.get("cmdstat_eval", {}).get("calls", 0)
    )


async def test_four_processes_sharing_one_limit_never_exceed_it(
    standin: ProviderStandIn, test_redis_url: str
) -> None:
    limit = 20
    # The pacing reserves `jitter_s` for requests reaching the provider late or early; this
    # machine runs 5 busy processes on 2 cores (and other suites beside), so reserve 100 ms.
    policy = {"rate": limit, "breaker": False, "jitter_s": 0.1}
    replicas = await Replicas.start(4, redis_url=test_redis_url, url=standin.url, policy=policy)
    try:
        standin.clear()
        answers = await replicas.run({"op": "load", "concurrency": 6, "duration_s": 3.0})
    finally:
        await replicas.stop()
    times = standin.times()
    assert total(answers, "ok") == len(times)
    assert standin.max_in_window(1.0) <= limit, "a 1-second window saw more than the limit"
    # Saturated: demand (24 callers) far above the limit, and the limit is used, not starved.
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.8 * limit, achieved


async def test_over_the_limit_waits_within_the_deadline_else_resource_exhausted(
    make_guards: GuardsFactory, standin: ProviderStandIn, redis_client: aioredis.Redis
) -> None:
    guards = make_guards(ProviderPolicy(rate=2, breaker=False, jitter_s=0.0))
    guard = guards["standin"]
    standin.clear()
    async with httpx.AsyncClient() as client:

        async def get() -> httpx.Response:
            return await client.get(standin.url + "/v1/x")

        await guard.call("get", get, timeout=0.1)
        with pytest.raises(RateLimited) as err:
            await guard.call("get", get, timeout=0.1)
        assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.retry_after is not None and 0.3 < err.value.retry_after <= 0.5
        # The process remembers "no slot before t": a caller that cannot wait is refused
        # without another round trip to Redis.
        before = await _evalsha_calls(redis_client)
        with pytest.raises(RateLimited):
            await guard.call("get", get, timeout=0.1)
        assert await _evalsha_calls(redis_client) == before
        # A caller whose deadline allows the wait books the next slot and waits for it.
        started = time.monotonic()
        await guard.call("get", get, timeout=2.0)
        assert 0.3 < time.monotonic() - started < 1.0
    assert standin.count() == 2
    wait = guards.metrics.rate_wait.labels("standin")
    assert wait._sum.get() > 0.3  # type: ignore[attr-defined]
    assert guards.metrics.rate_rejected.labels("standin")._value.get() == 2  # type: ignore[attr-defined]


async def test_concurrency_cap_holds_across_replicas(
    make_guards: GuardsFactory, standin: ProviderStandIn
) -> None:
    policy = ProviderPolicy(concurrency=3, breaker=False)
    replica_a, replica_b = make_guards(policy)["standin"], make_guards(policy)["standin"]
    standin.clear()
    standin.default = Reply(200, delay_s=0.2)
    async with httpx.AsyncClient() as client:
        results = await asyncio.gather(
            *(
                guard.call("get", lambda: client.get(standin.url + "/v1/x"))
                for guard in [replica_a, replica_b] * 6
            )
        )
    assert all(r.status_code == 200 for r in results)
    assert standin.max_in_flight == 3
    assert standin.count() == 12


async def test_limits_are_per_scope(make_guards: GuardsFactory, standin: ProviderStandIn) -> None:
    guard = make_guards(ProviderPolicy(rate=1, breaker=False))["standin"]
    standin.clear()
    async with httpx.AsyncClient() as client:

        async def get() -> httpx.Response:
            return await client.get(standin.url + "/v1/x")

        await guard.call("get", get, timeout=0.2, scope="realm-1")
        await guard.call("get", get, timeout=0.2, scope="realm-2")  # its own budget
        with pytest.raises(RateLimited):
            await guard.call("get", get, timeout=0.2, scope="realm-1")
