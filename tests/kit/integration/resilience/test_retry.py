"""Retries through the guard against the stand-in: what is retried, how long, and how much."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest

from meshdev.standins.provider import ProviderStandIn, Reply
from meshkit.context import ANONYMOUS, CallInfo, call_var
from meshkit.resilience import (
    ProviderDeadlineExceeded,
    ProviderPolicy,
    ProviderThrottled,
    ProviderUnavailable,
)
from tests.kit.integration.resilience.conftest import GuardsFactory

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "breaker": False}


@pytest.fixture
async def client() -> httpx.AsyncClient:
    async with httpx.AsyncClient() as c:
        yield c


def _get(client: httpx.AsyncClient, standin: ProviderStandIn):  # type: ignore[no-untyped-def]
    async def get() -> httpx.Response:
        response = await client.get(standin.url + "/v1/thing")
        response.raise_for_status()
        return response

    return get


async def test_client_errors_are_never_retried(
    make_guards: GuardsFactory, standin: ProviderStandIn, client: httpx.AsyncClient
) -> None:
    guard = make_guards(ProviderPolicy(max_attempts=5, **FAST))["standin"]
    for status in (400, 402, 404, 409, 422):
        standin.clear()
        standin.default = Reply(status)
        with pytest.raises(httpx.HTTPStatusError):  # the adapter gets the original error
            await guard.call("get", _get(client, standin), idempotent=True)
        assert standin.count() == 1, status
        # A returned 4xx response comes back unchanged, also after one attempt.
        response = await guard.call(
            "get", lambda: client.get(standin.url + "/v1/thing"), idempotent=True
        )
        assert response.status_code == status and standin.count() == 2


async def test_transient_failures_are_retried_until_success(
    make_guards: GuardsFactory, standin: ProviderStandIn, client: httpx.AsyncClient
) -> None:
    guards = make_guards(ProviderPolicy(max_attempts=4, **FAST))
    guard = guards["standin"]
    standin.clear()
    standin.script(Reply(503), Reply(reset=True), Reply(200, delay_s=0.3), Reply(200))
    fast_guard = make_guards(ProviderPolicy(max_attempts=4, attempt_timeout_s=0.1, **FAST))
    response = await fast_guard["standin"].call("get", _get(client, standin), idempotent=True)
    assert response.status_code == 200 and standin.count() == 4  # 503, reset, timeout, ok
    standin.clear()
    standin.script(Reply(502))
    response = await guard.call("get", _get(client, standin), idempotent=True)
    assert response.status_code == 200 and standin.count() == 2
    assert guards.metrics.retries.labels("standin", "get")._value.get() == 1  # type: ignore[attr-defined]


async def test_a_non_idempotent_call_is_attempted_once(
    make_guards: GuardsFactory, standin: ProviderStandIn, client: httpx.AsyncClient
) -> None:
    guard = make_guards(ProviderPolicy(max_attempts=5, **FAST))["standin"]
    standin.clear()
    standin.default = Reply(503)
    with pytest.raises(ProviderUnavailable) as err:
        await guard.call("send", _get(client, standin))
    assert standin.count() == 1 and err.value.code is grpc.StatusCode.UNAVAILABLE
    # With an idempotency key the same call may be retried.
    with pytest.raises(ProviderUnavailable):
        await guard.call("send", _get(client, standin), idempotency_key="evt-1")
    assert standin.count() == 1 + 5


async def test_429_waits_for_retry_after(
    make_guards: GuardsFactory, standin: ProviderStandIn, client: httpx.AsyncClient
) -> None:
    guard = make_guards(ProviderPolicy(**FAST))["standin"]
    standin.clear()
    standin.script(Reply(429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    response = await guard.call("get", _get(client, standin), idempotent=True)
    assert response.status_code == 200
    arrivals = standin.times()
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 1.0
    assert time.monotonic() - started < 1.5
    # When the provider keeps throttling, the caller gets RESOURCE_EXHAUSTED with its hint.
    standin.clear()
    standin.default = Reply(429, headers={"Retry-After": "30"})
    with pytest.raises(ProviderThrottled) as err:
        await guard.call("get", _get(client, standin), idempotent=True, timeout=2.0)
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.retry_after == 30.0 and standin.count() == 1


async def test_retry_budget_caps_retries_in_a_sustained_outage(
    make_guards: GuardsFactory, standin: ProviderStandIn, client: httpx.AsyncClient
) -> None:
    policy = ProviderPolicy(
        max_attempts=3, retry_budget_ratio=0.2, retry_budget_min_per_s=0.5, **FAST
    )
    guards = make_guards(policy, expected_replicas=1)
    guard = guards["standin"]
    standin.clear()
    standin.default = Reply(503)
    calls = 100

    async def one() -> None:
        with pytest.raises(ProviderUnavailable):
            await guard.call("get", _get(client, standin), idempotent=True)

    for _ in range(calls // 10):
        await asyncio.gather(*(one() for _ in range(10)))
    retries = standin.count() - calls
    # 20 % of the calls plus a floor of 0.5/s over the 10 s window; without a budget: 200.
    assert 0 < retries <= 0.2 * calls + 5
    assert guards.metrics.budget_exhausted.labels("standin")._value.get() > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "reply",
    [Reply(200, delay_s=2.0), Reply(503, headers={"Retry-After": "5"}), Reply(503)],
    ids=["slow", "retry-after-too-long", "failing"],
)
async def test_a_call_with_300ms_left_returns_before_its_deadline(
    make_guards: GuardsFactory,
    standin: ProviderStandIn,
    client: httpx.AsyncClient,
    reply: Reply,
) -> None:
    guard = make_guards(ProviderPolicy(max_attempts=10, backoff_base_s=0.2, breaker=False))[
        "standin"
    ]
    standin.clear()
    standin.default = reply
    # The inbound gRPC deadline, as the kit's interceptor records it for the handler.
    deadline = time.monotonic() + 0.3
    token = call_var.set(CallInfo("/svc/Method", "req-1", ANONYMOUS, deadline))
    try:
        with pytest.raises((ProviderDeadlineExceeded, ProviderUnavailable)) as err:
            await guard.call("get", _get(client, standin), idempotent=True)
    finally:
        call_var.reset(token)
    assert time.monotonic() < deadline
    if reply.delay_s:
        assert isinstance(err.value, ProviderDeadlineExceeded)
        assert err.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        assert err.value.code is grpc.StatusCode.UNAVAILABLE


async def test_no_inbound_deadline_uses_the_attempt_timeout(
    make_guards: GuardsFactory, standin: ProviderStandIn, client: httpx.AsyncClient
) -> None:
    guard = make_guards(ProviderPolicy(max_attempts=1, attempt_timeout_s=0.2, **FAST))["standin"]
    standin.clear()
    standin.default = Reply(200, delay_s=1.0)
    token = call_var.set(CallInfo("/svc/Method", "req-2", ANONYMOUS, None))
    try:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as err:
            await guard.call("get", _get(client, standin), idempotent=True)
        assert 0.2 <= time.monotonic() - started < 0.5
        assert "timeout" in err.value.message
    finally:
        call_var.reset(token)
