"""One replica for the multi-process guard tests and the rate-limit benchmark (tests only).

`python -m meshdev.testing.guard_replica '<config json>'` runs as its own OS process with a JSON
config (Redis URL, stand-in URL, provider policy); it
builds real `Guards` like a service does, prints `ready`, then runs commands read from stdin (one
JSON object a line) and answers each with one JSON line:

  {"op": "burst", "calls": N, "start_at": <epoch s>}    N concurrent calls at once
  {"op": "load", "concurrency": C, "duration_s": D, "start_at": <epoch s>}
                                                        C callers in a loop for D seconds
  {"op": "state"}                                       this process's view of the breaker
  {"op": "quit"}

Answers count outcomes (`ok`, `http_<status>`, or the reason of the guard's MeshError), give the
breaker state and the rate-limit slots missed so far (woke too late to use them).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from meshkit.errors import MeshError
from meshkit.resilience import Guard, Guards, GuardSettings, ProviderPolicy, connect_guard_redis

PROVIDER = "standin"


async def _one(guard: Guard, client: httpx.AsyncClient, url: str, outcomes: Counter[str]) -> None:
    try:
        response = await guard.call("get", lambda: client.get(url), idempotent=True)
        outcomes["ok" if response.status_code < 400 else f"http_{response.status_code}"] += 1
    except MeshError as exc:
        outcomes[exc.reason] += 1


def _answer(line: str) -> None:
    """One protocol line on stdout (the parent reads them; logs go to stderr)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _sleep_until(epoch: float | None) -> None:
    if epoch is not None:
        await asyncio.sleep(max(0.0, epoch - time.time()))


async def main(config: dict[str, Any]) -> None:
    settings = GuardSettings(
        expected_replicas=int(config.get("replicas", 4)),
        redis_retry_s=float(config.get("redis_retry_s", 1.0)),
        # Generous: these tests are about sharing, and a loaded 2-core CI box can stall a Redis
        # round trip past the production 0.25 s, which would (correctly) switch to fallback.
        redis_timeout_s=float(config.get("redis_timeout_s", 1.0)),
        policies={PROVIDER: ProviderPolicy(**config["policy"])},
    )
    redis = connect_guard_redis(config["redis_url"], settings)
    registry = CollectorRegistry()
    guards = Guards(redis, registry, settings)
    guard = guards[PROVIDER]
    url = config["url"] + "/v1/thing"
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        # Warm up the connection pool and the scripts, so timing starts with a ready process.
        await client.get(config["url"] + "/_warmup")
        _answer("ready")
        while True:
            line = await reader.readline()
            if not line:
                break
            command = json.loads(line)
            outcomes: Counter[str] = Counter()
            op = command["op"]
            if op == "quit":
                break
            if op == "burst":
                await _sleep_until(command.get("start_at"))
                await asyncio.gather(
                    *(_one(guard, client, url, outcomes) for _ in range(command["calls"]))
                )
            elif op == "load":
                await _sleep_until(command.get("start_at"))
                stop_at = time.monotonic() + command["duration_s"]

                async def caller(
                    stop_at: float = stop_at, outcomes: Counter[str] = outcomes
                ) -> None:
                    while time.monotonic() < stop_at:
                        await _one(guard, client, url, outcomes)

                await asyncio.gather(*(caller() for _ in range(command["concurrency"])))
            state = guard.breaker.state if guard.breaker is not None else None
            missed = registry.get_sample_value(
                "rate_limit_missed_slots_total", {"provider": PROVIDER}
            )
            _answer(json.dumps({"outcomes": dict(outcomes), "state": state, "missed": missed}))
    await guards.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
