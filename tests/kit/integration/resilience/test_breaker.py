"""The circuit breaker: state machine (shared in Redis, and its local twin), asyncio, replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pybreaker
import pytest
from prometheus_client import CollectorRegistry

from meshdev.embedded import free_port
from meshdev.standins.provider import ProviderStandIn, Reply
from meshkit.resilience import (
    BreakerRejected,
    CircuitBreaker,
    CircuitOpen,
    GuardMetrics,
    GuardSettings,
    ProviderPolicy,
    ProviderUnavailable,
    SharedState,
    connect_guard_redis,
)
from meshkit.resilience._breaker import FAILURE, NEUTRAL, SUCCESS
from meshkit.resilience._retry import classify
from tests.kit.integration.resilience.conftest import GuardsFactory, Replicas, total

BreakerFactory = Callable[..., CircuitBreaker]


@pytest.fixture(params=["shared", "local"])
async def make_breaker(
    request: pytest.FixtureRequest, test_redis_url: str
) -> AsyncIterator[BreakerFactory]:
    """Breakers deciding in Redis, or — Redis unreachable — with the local twin of the scripts."""
    url = test_redis_url if request.param == "shared" else f"redis://127.0.0.1:{free_port()}"
    clients = []

    def make(**policy: object) -> CircuitBreaker:
        redis = connect_guard_redis(url, GuardSettings())
        clients.append(redis)
        metrics = GuardMetrics(CollectorRegistry())
        shared = SharedState(redis, metrics, timeout_s=0.25, retry_s=60)
        return CircuitBreaker(
            "standin",
            ProviderPolicy(**policy),  # type: ignore[arg-type]
            shared,
            metrics,
            key_prefix="test",
            is_health_failure=lambda exc: classify(exc).health_failure,
        )

    yield make
    for client in clients:
        await client.aclose()


async def _outcomes(breaker: CircuitBreaker, *outcomes: int) -> None:
    for outcome in outcomes:
        await breaker.record(await breaker.admit(), outcome)


async def test_opens_on_consecutive_failures(make_breaker: BreakerFactory) -> None:
    breaker = make_breaker(fail_max=3, min_calls=100)
    await _outcomes(breaker, FAILURE, FAILURE, SUCCESS, FAILURE, FAILURE)
    assert breaker.state == "closed"  # the success reset the streak
    await _outcomes(breaker, FAILURE)
    assert breaker.state == "open"
    with pytest.raises(BreakerRejected) as rejected:
        await breaker.admit()
    assert 29 < rejected.value.retry_after <= 30


async def test_opens_on_failure_rate_once_the_window_has_enough_calls(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(fail_max=100, failure_rate=0.5, min_calls=10)
    await _outcomes(breaker, *([FAILURE, SUCCESS] * 4))
    await _outcomes(breaker, FAILURE)
    assert breaker.state == "closed"  # 5 of 9 failed, but 9 calls are too few to judge
    await _outcomes(breaker, SUCCESS, SUCCESS, SUCCESS, FAILURE)
    assert breaker.state == "closed"  # 6 of 13
    await _outcomes(breaker, FAILURE)
    assert breaker.state == "open"  # 7 of 14


async def test_half_open_lets_only_the_probes_through_and_closes_after_successes(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(fail_max=1, reset_timeout_s=0.3, half_open_probes=2, success_threshold=2)
    await _outcomes(breaker, FAILURE)
    assert breaker.state == "open"
    await asyncio.sleep(0.35)
    first, second = await breaker.admit(), await breaker.admit()
    assert breaker.state == "half-open" and first.probe and second.probe
    with pytest.raises(BreakerRejected):
        await breaker.admit()
    await breaker.record(first, SUCCESS)
    assert breaker.state == "half-open"
    await breaker.record(second, SUCCESS)
    assert breaker.state == "closed"
    await _outcomes(breaker, SUCCESS, SUCCESS, SUCCESS)


async def test_a_failed_probe_reopens_and_a_cancelled_one_frees_its_slot(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(fail_max=1, reset_timeout_s=0.3, half_open_probes=1)
    await _outcomes(breaker, FAILURE)
    await asyncio.sleep(0.35)
    probe = await breaker.admit()
    await breaker.record(probe, NEUTRAL)  # e.g. no rate-limit slot: the probe never went out
    probe = await breaker.admit()
    await breaker.record(probe, FAILURE)
    assert breaker.state == "open"
    with pytest.raises(BreakerRejected):
        await breaker.admit()


async def test_outcomes_of_calls_admitted_under_an_earlier_state_do_not_count(
    make_breaker: BreakerFactory,
) -> None:
    breaker = make_breaker(fail_max=2, reset_timeout_s=0.3, half_open_probes=1, success_threshold=1)
    straggler = await breaker.admit()  # admitted while closed, answers late
    await _outcomes(breaker, FAILURE, FAILURE)
    await asyncio.sleep(0.35)
    probe = await breaker.admit()
    await breaker.record(straggler, FAILURE)  # must not reopen the half-open breaker
    assert breaker.state == "half-open"
    await breaker.record(probe, SUCCESS)
    assert breaker.state == "closed"


async def test_awaited_failures_of_an_async_function_open_the_breaker(
    make_breaker: BreakerFactory,
) -> None:
    async def refused() -> None:
        await asyncio.sleep(0)
        raise ConnectionRefusedError("provider down")

    # The trap: pybreaker calls the coroutine function and never awaits it, so nothing counts.
    plain = pybreaker.CircuitBreaker(fail_max=3)
    for _ in range(4):
        with pytest.raises(ConnectionRefusedError):
            await plain.call(refused)
    assert plain.current_state == "closed" and plain.fail_counter == 0

    breaker = make_breaker(fail_max=3)
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await breaker.call(refused)
    assert breaker.state == "open"
    with pytest.raises(BreakerRejected):
        await breaker.call(refused)


async def test_business_errors_never_open_the_breaker(
    make_guards: GuardsFactory, standin: ProviderStandIn
) -> None:
    guard = make_guards(ProviderPolicy(fail_max=2, max_attempts=1))["standin"]
    standin.clear()
    standin.default = Reply(402, {"error": {"code": "card_declined"}})

    async def charge(client: httpx.AsyncClient) -> httpx.Response:
        response = await client.post(standin.url + "/v1/charges")
        response.raise_for_status()
        return response

    async with httpx.AsyncClient() as client:
        for _ in range(5):
            with pytest.raises(httpx.HTTPStatusError):
                await guard.call("charges.create", lambda: charge(client), idempotent=True)
        assert guard.breaker is not None and guard.breaker.state == "closed"
        standin.default = Reply(503)
        for _ in range(2):
            with pytest.raises(ProviderUnavailable):
                await guard.call("charges.create", lambda: charge(client), idempotent=True)
        with pytest.raises(CircuitOpen) as err:
            await guard.call("charges.create", lambda: charge(client), idempotent=True)
    assert err.value.code is grpc.StatusCode.UNAVAILABLE and err.value.retry_after
    assert standin.count() == 7


async def test_breaker_opened_in_one_process_is_open_in_the_others_then_probes_close_it(
    standin: ProviderStandIn, test_redis_url: str
) -> None:
    policy = {
        "fail_max": 3,
        "reset_timeout_s": 2.0,
        "half_open_probes": 2,
        "success_threshold": 2,
        "max_attempts": 1,
    }
    replicas = await Replicas.start(4, redis_url=test_redis_url, url=standin.url, policy=policy)
    try:
        standin.clear()
        standin.default = Reply(503)
        [first] = await replicas.run({"op": "burst", "calls": 3}, which=[0])
        assert first["outcomes"] == {"PROVIDER_UNAVAILABLE": 3} and first["state"] == "open"
        others = await replicas.run({"op": "burst", "calls": 5}, which=[1, 2, 3])
        assert total(others, "CIRCUIT_OPEN") == 15 and standin.count() == 3
        assert {a["state"] for a in others} == {"open"}

        await asyncio.sleep(2.0)
        standin.clear()
        standin.default = Reply(200, delay_s=1.0)  # probes stay in flight while others arrive
        answers = await replicas.run({"op": "burst", "calls": 5})
        assert total(answers, "ok") == 2 and total(answers, "CIRCUIT_OPEN") == 18
        assert standin.count() == 2
        answers = await replicas.run({"op": "burst", "calls": 5})
        assert total(answers, "ok") == 20 and {a["state"] for a in answers} == {"closed"}
    finally:
        await replicas.stop()


class _SlowAnswers(SharedState):
    """Real Redis, but the answers to `cb_record` reach the breaker in reverse order (as they
    can when concurrent calls' replies are processed in whatever order their tasks resume)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.record_delays = [0.3, 0.2, 0.1]

    async def run(self, name: str, keys: list[str], args: list[object]) -> list[int]:
        answer: list[int] = await super().run(name, keys, args)
        if name == "cb_record" and self.record_delays:
            await asyncio.sleep(self.record_delays.pop(0))
        return answer


async def test_an_older_answer_never_sets_the_mirror_back(test_redis_url: str) -> None:
    redis = connect_guard_redis(test_redis_url, GuardSettings())
    metrics = GuardMetrics(CollectorRegistry())
    breaker = CircuitBreaker(
        "reorder",
        ProviderPolicy(fail_max=3, min_calls=100),
        _SlowAnswers(redis, metrics, timeout_s=1.0),
        metrics,
        key_prefix=f"test-{free_port()}",
        is_health_failure=lambda exc: classify(exc).health_failure,
    )
    try:
        tickets = [await breaker.admit() for _ in range(3)]

        async def fail(ticket: object, after: float) -> None:
            await asyncio.sleep(after)  # Redis executes them in this order
            await breaker.record(ticket, FAILURE)  # type: ignore[arg-type]

        # The third failure opens the breaker in Redis, and its answer arrives first; the two
        # older "still closed" answers arrive after it and must be ignored.
        await asyncio.gather(*(fail(t, i * 0.01) for i, t in enumerate(tickets)))
        assert breaker.state == "open"
        with pytest.raises(BreakerRejected):
            await breaker.admit()
    finally:
        await redis.aclose()
