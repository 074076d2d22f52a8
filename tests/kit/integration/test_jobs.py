"""Background work (meshkit.jobs) on a real Redis: polling workers, periodic and leased jobs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from meshkit.jobs import Lease, LeasedJob, PollingWorker


async def test_polling_worker_runs_again_at_once_while_there_is_more_work() -> None:
    calls: list[float] = []
    queue = [True, True, False, True, False]

    async def step() -> bool:
        calls.append(asyncio.get_running_loop().time())
        more = queue.pop(0) if queue else False
        if not queue:
            worker.stop()
        return more

    worker = PollingWorker("w", step, idle_s=0.2)
    await asyncio.wait_for(worker.run(), 5)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 5
    assert gaps[0] < 0.1 and gaps[1] < 0.1  # more work: no wait
    assert gaps[2] >= 0.19  # the queue looked empty: idle wait
    assert gaps[3] < 0.1 and gaps[3] < gaps[2]


async def test_polling_worker_backs_off_while_steps_fail_and_stops_promptly() -> None:
    calls: list[float] = []

    async def step() -> bool:
        calls.append(asyncio.get_running_loop().time())
        raise RuntimeError("database down")

    worker = PollingWorker("w", step, idle_s=0.05, max_backoff_s=0.4, rng=random.Random(1))
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.2)
    started = asyncio.get_running_loop().time()
    worker.stop()
    await asyncio.wait_for(task, 1)
    assert asyncio.get_running_loop().time() - started < 0.2  # stop() cuts the backoff short
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert 3 <= len(calls) <= 12
    assert all(gap <= 0.45 for gap in gaps)  # capped
    assert gaps[-1] >= 0.19  # grown well past idle_s


async def test_lease_is_exclusive_renewable_and_released(redis_client: aioredis.Redis) -> None:
    a, b = Lease(redis_client, "k", 0.5), Lease(redis_client, "k", 0.5)
    assert await a.acquire()
    assert not await b.acquire()
    assert await a.renew()
    assert not await b.renew()  # b holds nothing
    await b.release()  # a no-op: never deletes a's lease
    assert await redis_client.get("k")
    await a.release()
    assert await b.acquire()
    await asyncio.sleep(0.7)  # b's lease expires unrenewed
    assert not await b.renew()
    assert await a.acquire()


async def test_a_leased_job_runs_on_one_replica_at_a_time(redis_client: aioredis.Redis) -> None:
    registry = CollectorRegistry()
    running = 0
    overlaps = 0
    runs = 0

    async def work() -> None:
        nonlocal running, overlaps, runs
        running += 1
        overlaps = max(overlaps, running)
        runs += 1
        await asyncio.sleep(0.3)  # longer than a third of the lease: renewed while it runs
        running -= 1

    jobs = [
        LeasedJob(
            "reconcile",
            0.05,
            work,
            redis=redis_client,
            key_prefix="test",
            lease_s=0.3,
            registry=registry,
        )
        for _ in range(3)
    ]
    outcomes = await asyncio.gather(*(job.run_once() for job in jobs))
    assert sorted(outcomes) == ["ok", "skipped", "skipped"]
    assert overlaps == 1 and runs == 1
    assert await redis_client.get("test:lease:reconcile") is None  # released after the run
    # Released, so the next run anywhere need not wait for the lease to expire.
    assert await jobs[1].run_once() == "ok"
    assert registry.get_sample_value("job_runs_total", {"job": "reconcile", "outcome": "ok"}) == 2
    assert (
        registry.get_sample_value("job_runs_total", {"job": "reconcile", "outcome": "skipped"}) == 2
    )
    assert registry.get_sample_value("job_last_success_timestamp_seconds", {"job": "reconcile"})


async def test_a_run_that_loses_its_lease_is_cancelled(redis_client: aioredis.Redis) -> None:
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = LeasedJob("long", 1, work, redis=redis_client, key_prefix="test", lease_s=0.3)
    run = asyncio.create_task(job.run_once())
    await asyncio.sleep(0.05)
    await redis_client.set("test:lease:long", "someone-else")  # the lease is taken over
    outcome = await asyncio.wait_for(run, 2)
    assert outcome == "lost" and cancelled.is_set()
    assert await redis_client.get("test:lease:long") == b"someone-else"  # not deleted by us


async def test_a_leased_job_loop_stops_between_runs(redis_client: aioredis.Redis) -> None:
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1

    job = LeasedJob("tick", 0.05, work, redis=redis_client, key_prefix="test")
    task = asyncio.create_task(job.run())
    await asyncio.sleep(0.4)
    job.stop()
    await asyncio.wait_for(task, 1)
    assert runs >= 3
    with contextlib.suppress(Exception):
        task.result()


async def test_a_woken_polling_worker_looks_again_before_its_idle_wait_ends() -> None:
    wake = asyncio.Event()
    calls: list[float] = []

    async def step() -> bool:
        calls.append(asyncio.get_running_loop().time())
        return False

    worker = PollingWorker("w", step, idle_s=5.0, wake=wake)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)
    wake.set()  # work was enqueued in this process
    await asyncio.sleep(0.1)
    assert len(calls) == 2 and calls[1] - calls[0] < 1.0
    worker.stop()  # also ends the idle wait at once
    await asyncio.wait_for(task, 1)
