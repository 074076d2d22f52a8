"""Pure parts of the guard: the policy table, classification, Retry-After, budget, local GCRA."""

from __future__ import annotations

import email.utils
import time

import grpc
import httpx
import pytest

from meshdev.standins.provider import max_in_window
from meshkit.resilience import (
    DEFAULT_POLICIES,
    LocalGcra,
    NoSlot,
    ProviderError,
    ProviderPolicy,
    RetryBudget,
    classify,
    classify_result,
    load_policies,
    parse_retry_after,
)


def test_defaults_follow_the_providers_limits_with_headroom() -> None:
    p = DEFAULT_POLICIES
    assert p["stripe"].rate == 90 and p["square"].rate == 45
    assert (p["mailchimp"].rate, p["mailchimp"].concurrency) == (9, 10)
    assert (p["quickbooks"].rate, p["quickbooks"].period_s) == (450, 60)
    assert {"sendgrid", "twilio", "solana"} <= set(p)


def test_overrides_apply_per_field_and_name_every_problem() -> None:
    policies = load_policies('{"solana": {"rate": 40, "period_s": 1}, "new": {"rate": 5}}')
    assert policies["solana"].rate == 40 and policies["solana"].period_s == 1
    assert policies["solana"].concurrency == DEFAULT_POLICIES["solana"].concurrency
    assert policies["new"].rate == 5 and policies["stripe"] == DEFAULT_POLICIES["stripe"]
    with pytest.raises(ValueError) as err:
        load_policies({"stripe": {"rat": 1}, "square": {"rate": -1}})
    assert "stripe: unknown fields rat" in str(err.value) and "square: rate" in str(err.value)


def test_pacing_keeps_every_window_at_or_under_the_limit() -> None:
    second = 1_000_000_000
    gcra = LocalGcra.for_policy(ProviderPolicy(rate=45, burst=1, jitter_s=0.0))
    now = 100 * second
    slots = [now + int(gcra.reserve(max_wait=60, now_ns=now) * second) for _ in range(500)]
    assert max_in_window(slots, second) == 45
    gcra = LocalGcra.for_policy(ProviderPolicy(rate=450, period_s=60, burst=10, jitter_s=0.0))
    slots = [now + int(gcra.reserve(max_wait=600, now_ns=now) * second) for _ in range(2000)]
    assert max_in_window(slots, 60 * second) == 450
    assert slots[:10] == [now] * 10  # the burst goes out at once


def test_local_gcra_refuses_a_wait_longer_than_the_caller_allows() -> None:
    gcra = LocalGcra(interval_ns=100_000_000, burst_offset_ns=100_000_000)
    now = 10_000_000_000
    assert gcra.reserve(0.0, now_ns=now) == 0.0
    with pytest.raises(NoSlot) as no_slot:
        gcra.reserve(0.05, now_ns=now)
    assert no_slot.value.retry_after == pytest.approx(0.1)
    assert gcra.reserve(0.1, now_ns=now) == pytest.approx(0.1)  # refusals book nothing


def test_local_share_divides_limits_by_replicas() -> None:
    share = DEFAULT_POLICIES["mailchimp"].local_share(4)
    assert share.rate == pytest.approx(2.25) and share.concurrency == 2
    assert ProviderPolicy(rate=0.5).local_share(3).burst == 1


def test_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"Retry-After": date}) or 0) <= 31
    reset = str(int(time.time()) + 10)
    assert 8 <= (parse_retry_after({"X-RateLimit-Reset": reset}, 429) or 0) <= 11
    assert parse_retry_after({"X-RateLimit-Reset": reset}, 200) is None
    assert parse_retry_after({}) is None


class _SdkError(Exception):
    """Shaped like stripe's / twilio's errors: an HTTP status and headers on the exception."""

    def __init__(self, http_status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__("sdk error")
        self.http_status = http_status
        self.headers = headers or {}


class _Classified(Exception):
    """An adapter's own error that knows whether it is transient (e.g. a chain error)."""

    def __init__(self, *, retryable: bool) -> None:
        super().__init__("classified")
        self.retryable = retryable
        self.retry_after = 1.5


class _Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (ProviderError(503, headers={"Retry-After": "2"}), "server_error", True),
        (ProviderError(429), "throttled", True),
        (ProviderError(402), "client_error", False),
        (ProviderError(404), "client_error", False),
        (ProviderError(501), "client_error", False),
        (TimeoutError(), "timeout", True),
        (httpx.ReadTimeout("slow"), "timeout", True),
        (httpx.ConnectError("refused"), "connection_error", True),
        (httpx.ReadError("reset"), "connection_error", True),
        (ConnectionResetError(), "connection_error", True),
        (_SdkError(500), "server_error", True),
        (_SdkError(402), "client_error", False),
        (_Rpc(grpc.StatusCode.UNAVAILABLE), "connection_error", True),
        (_Rpc(grpc.StatusCode.INVALID_ARGUMENT), "client_error", False),
        (KeyError("our own bug"), "error", False),
        (_Classified(retryable=True), "server_error", True),
        (_Classified(retryable=False), "client_error", False),
    ],
)
def test_classification(exc: BaseException, kind: str, retryable: bool) -> None:
    verdict = classify(exc)
    assert (verdict.kind, verdict.retryable, verdict.health_failure) == (kind, retryable, retryable)


def test_http_status_error_and_returned_responses() -> None:
    request = httpx.Request("POST", "http://provider/v1/charges")
    throttled = httpx.Response(429, headers={"Retry-After": "7"}, request=request)
    verdict = classify(httpx.HTTPStatusError("429", request=request, response=throttled))
    assert verdict.kind == "throttled" and verdict.retry_after == 7.0
    assert classify_result(httpx.Response(200, request=request)).kind == "ok"
    assert classify_result(httpx.Response(402, request=request)).kind == "client_error"
    assert classify_result(httpx.Response(502, request=request)).health_failure
    assert classify_result({"id": "pi_1"}).kind == "ok"


def test_retry_budget_is_a_share_of_calls_plus_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, min_per_s=0.5, window_s=10, replicas=1)  # floor 5
    for _ in range(100):
        budget.record_call()
    spent = sum(budget.try_spend() for _ in range(100))
    assert spent == 25
    shared = RetryBudget(ratio=0.2, min_per_s=1.0, window_s=10, replicas=5)  # floor 10 / 5
    assert sum(shared.try_spend() for _ in range(10)) == 2
