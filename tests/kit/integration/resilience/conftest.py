"""Fixtures for the guard tests: a provider stand-in, guards on the test Redis, replicas."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from meshdev.standins.provider import ProviderStandIn
from meshdev.testing.databases import REDIS_TEST_DB
from meshkit.resilience import Guards, GuardSettings, ProviderPolicy, connect_guard_redis


@pytest_asyncio.fixture(loop_scope="session")
async def standin() -> AsyncIterator[ProviderStandIn]:
    async with ProviderStandIn() as provider:
        yield provider


@pytest.fixture
def test_redis_url(redis_url: str, redis_client: aioredis.Redis) -> str:
    """The flushed test database (the `redis_client` fixture flushes it around each test)."""
    return f"{redis_url}/{REDIS_TEST_DB}"


GuardsFactory = Callable[..., Guards]


@pytest_asyncio.fixture(loop_scope="session")
async def make_guards(test_redis_url: str) -> AsyncIterator[GuardsFactory]:
    """`make_guards(policy, **settings)` → Guards with one provider named `standin`."""
    made: list[Guards] = []

    def make(policy: ProviderPolicy, *, redis_url: str | None = None, **settings: Any) -> Guards:
        # Sharing is under test, not Redis latency: a loaded CI box may stall a round trip past
        # the production 0.25 s, which would (correctly) switch to the local fallback.
        settings.setdefault("redis_timeout_s", 1.0)
        gs = GuardSettings(policies={"standin": policy}, **settings)
        guards = Guards(
            connect_guard_redis(redis_url or test_redis_url, gs), CollectorRegistry(), gs
        )
        made.append(guards)
        return guards

    yield make
    for guards in made:
        await guards.aclose()


class Replicas:
    """N `meshdev.testing.guard_replica` processes (sharing Redis and the stand-in)."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(
        cls, n: int, *, redis_url: str, url: str, policy: dict[str, Any], **extra: Any
    ) -> Replicas:
        config = json.dumps({"redis_url": redis_url, "url": url, "policy": policy, **extra})
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "meshdev.testing.guard_replica",
                config,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(n)
        ]
        replicas = cls(procs)
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line.strip() == b"ready", line
        return replicas

    async def run(self, command: dict[str, Any], which: list[int] | None = None) -> list[Any]:
        """Send one command to some (default all) replicas, starting together; their answers."""
        chosen = [self.procs[i] for i in (which if which is not None else range(len(self.procs)))]
        command = {"start_at": time.time() + 0.3, **command}
        for proc in chosen:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(command) + "\n").encode())
            await proc.stdin.drain()
        answers = []
        for proc in chosen:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=90)
            answers.append(json.loads(line))
        return answers

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(b'{"op": "quit"}\n')
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def total(answers: list[Any], outcome: str) -> int:
    return sum(a["outcomes"].get(outcome, 0) for a in answers)
