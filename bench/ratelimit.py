"""Benchmark: the shared rate limiter's decisions, and the limit it holds across 4 processes.

1. Decisions against a bare Redis INCR, same client, same Redis, same run, in alternating
   rounds: sequential latency (p50/p99 of one round trip each) and throughput with
   `CONCURRENCY` concurrent callers (median of the rounds). A
   decision is `RateLimiter.acquire` on a limit too high to ever wait, i.e. the GCRA Lua script
   plus the limiter's bookkeeping — what every guarded provider call pays.
2. Four replica processes (`meshdev.testing.guard_replica`, real `Guards`) push a 45 req/s limit
   for `LOAD_SECONDS` at a local provider stand-in, 8 callers each. Counted at the stand-in:
   utilisation = arrivals per second / 45 (goal ≥ 0.95), violations = arrivals that open a
   1-second window holding more than 45 (goal 0).

Last line: `ratelimit: utilisation=<x> violations=<n> decision_p99_ms=<n> vs_incr=<x>`
(vs_incr = decision throughput / INCR throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from _support import pct_ms
from prometheus_client import CollectorRegistry

from meshdev.embedded import EmbeddedRedis
from meshdev.standins.provider import ProviderStandIn
from meshkit.resilience import GuardMetrics, ProviderPolicy, RateLimiter, SharedState

CONCURRENCY = 64
SEQUENTIAL = 3000
THROUGHPUT_SECONDS = 2.0
ROUNDS = 3
LIMIT = 45
REPLICAS = 4
CALLERS = 8
LOAD_SECONDS = 20.0


async def _sequential(op: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(200):  # warm-up
        await op()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await op()
        latencies.append(time.perf_counter() - started)
    return latencies


async def _throughput(op: Callable[[], Awaitable[object]], seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await op()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return done / (time.perf_counter() - started)


async def decisions(redis_url: str) -> dict[str, float]:
    client = aioredis.from_url(redis_url, max_connections=CONCURRENCY + 8)
    metrics = GuardMetrics(CollectorRegistry())
    shared = SharedState(client, metrics, timeout_s=2.0)
    limiter = RateLimiter(
        "bench",
        ProviderPolicy(rate=1e9, burst=1000),
        shared,
        metrics,
        replicas=1,
        key_prefix="bench",
    )

    async def decide() -> object:
        return await limiter.acquire(max_wait=1.0)

    async def incr() -> object:
        return await client.incr("bench:incr")

    incr_lat: list[float] = []
    gcra_lat: list[float] = []
    incr_runs: list[float] = []
    gcra_runs: list[float] = []
    try:
        # Alternating rounds, so that noise from other work on the machine hits both alike.
        for _ in range(ROUNDS):
            incr_lat += await _sequential(incr, SEQUENTIAL // ROUNDS)
            gcra_lat += await _sequential(decide, SEQUENTIAL // ROUNDS)
            incr_runs.append(await _throughput(incr, THROUGHPUT_SECONDS))
            gcra_runs.append(await _throughput(decide, THROUGHPUT_SECONDS))
    finally:
        await client.aclose()
    incr_qps = statistics.median(incr_runs)
    gcra_qps = statistics.median(gcra_runs)
    return {
        "decision_p50_ms": statistics.median(gcra_lat) * 1000,
        "decision_p99_ms": pct_ms(gcra_lat, 0.99),
        "incr_p50_ms": statistics.median(incr_lat) * 1000,
        "incr_p99_ms": pct_ms(incr_lat, 0.99),
        "decisions_per_s": gcra_qps,
        "incr_per_s": incr_qps,
    }


async def _replica(config: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshdev.testing.guard_replica",
        config,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def shared_limit(redis_url: str) -> dict[str, float]:
    async with ProviderStandIn() as standin:
        config = json.dumps(
            {
                "redis_url": redis_url,
                "url": standin.url,
                "replicas": REPLICAS,
                "policy": {"rate": LIMIT, "breaker": False, "max_wait_s": 10.0},
            }
        )
        procs = [await _replica(config) for _ in range(REPLICAS)]
        try:
            for proc in procs:
                assert proc.stdout is not None
                assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
            standin.clear()
            command = {
                "op": "load",
                "concurrency": CALLERS,
                "duration_s": LOAD_SECONDS,
                "start_at": time.time() + 0.5,
            }
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write((json.dumps(command) + "\n").encode())
                await proc.stdin.drain()
            answers = []
            for proc in procs:
                assert proc.stdout is not None
                answers.append(json.loads(await proc.stdout.readline()))
        finally:
            for proc in procs:
                if proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(b'{"op": "quit"}\n')
                    proc.stdin.close()
            for proc in procs:
                await proc.wait()
        times = standin.times()
    errors = sum(v for a in answers for k, v in a["outcomes"].items() if k != "ok")
    missed = sum(a["missed"] or 0 for a in answers)
    violations = sum(1 for i, t in enumerate(times) if bisect_right(times, t + 1.0) - i > LIMIT)
    span = times[-1] - times[0]
    return {
        "arrivals": len(times),
        "errors": errors,
        "missed": missed,
        "rate_per_s": (len(times) - 1) / span,
        "utilisation": (len(times) - 1) / span / LIMIT,
        "violations": violations,
        "peak_1s": max(bisect_right(times, t + 1.0) - i for i, t in enumerate(times)),
    }


async def run(redis_url: str) -> None:
    d = await decisions(redis_url)
    print(
        f"decisions: sequential p50={d['decision_p50_ms']:.3f} ms p99={d['decision_p99_ms']:.3f}"
        f" ms; {CONCURRENCY} callers {d['decisions_per_s']:.0f}/s"
    )
    print(
        f"bare INCR: sequential p50={d['incr_p50_ms']:.3f} ms p99={d['incr_p99_ms']:.3f} ms;"
        f" {CONCURRENCY} callers {d['incr_per_s']:.0f}/s"
    )
    s = await shared_limit(redis_url)
    print(
        f"shared limit {LIMIT}/s, {REPLICAS} processes x {CALLERS} callers, {LOAD_SECONDS:.0f} s:"
        f" {s['arrivals']} arrivals, {s['rate_per_s']:.2f}/s, busiest 1-s window {s['peak_1s']},"
        f" guard errors {s['errors']}, slots missed by a stalled process {s['missed']:.0f}"
    )
    vs_incr = d["decisions_per_s"] / d["incr_per_s"]
    print(
        f"ratelimit: utilisation={s['utilisation']:.3f} violations={s['violations']}"
        f" decision_p99_ms={d['decision_p99_ms']:.3f} vs_incr={vs_incr:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    args = parser.parse_args()
    if args.redis_url:
        asyncio.run(run(args.redis_url))
        return
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as work:
        redis = EmbeddedRedis(Path(work) / "redis")
        try:
            asyncio.run(run(redis.start()))
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
