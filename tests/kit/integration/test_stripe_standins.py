"""The Stripe stand-ins (meshdev.standins.stripe): Stripe's idempotency rules in front of
localstripe and in the fast stand-in.

Rules that concern the SDK are checked through the official `stripe` SDK, configured as the
payment service's adapter configures it; rules about bytes with raw HTTP. Proxies run as the
child processes `LocalStripe` / `StripeStandIn` start, or in this event loop (`StandInServer`)
where a test needs to control the upstream (held, failing, absent) or the clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import pytest
import stripe

from meshdev.embedded import LocalStripe, StripeStandIn, free_port
from meshdev.standins.faultproxy import FaultProxy
from meshdev.standins.provider import ProviderStandIn, Reply
from meshdev.standins.stripe import TTL_S, IdempotencyLayer, StandInServer, proxy_app

API_VERSION = "2026-02-25.clover"  # what the payment service pins (stripe_api_version)
API_KEY = "sk_test_standins"
OTHER_API_KEY = "sk_test_someone_else"
INTENTS = "/v1/payment_intents"


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """localstripe behind the idempotency proxy, as `make run` and the payment tests get it."""
    with LocalStripe(tmp_path_factory.mktemp("localstripe")) as server:
        yield server


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StripeStandIn]:
    """The fast stand-in, as a child process (`python -m meshdev.standins.stripe fast`)."""
    with StripeStandIn(tmp_path_factory.mktemp("fast-stripe")) as server:
        yield server


@pytest.fixture
async def provider() -> AsyncIterator[ProviderStandIn]:
    async with ProviderStandIn() as upstream:
        yield upstream


@asynccontextmanager
async def sdk(url: str, api_key: str = API_KEY) -> AsyncIterator[stripe.StripeClient]:
    """A StripeClient configured like the payment service's adapter (aiohttp, no SDK retries)."""
    http = stripe.AIOHTTPClient()
    try:
        yield stripe.StripeClient(
            api_key,
            base_addresses={"api": url},
            stripe_version=API_VERSION,
            http_client=http,
            max_network_retries=0,
        )
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


def intent_params(marker: str, amount: int = 1_000, pm: str = "pm_card_visa") -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "eur",
        "payment_method": pm,
        "payment_method_types": ["card"],
        "confirm": True,
        "metadata": {"marker": marker},
    }


def intent_form(marker: str, amount: int = 1_000) -> dict[str, str]:
    """The same parameters, form-encoded by hand (raw HTTP)."""
    return {
        "amount": str(amount),
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "payment_method_types[0]": "card",
        "confirm": "true",
        "metadata[marker]": marker,
    }


async def post(
    url: str,
    path: str,
    data: dict[str, str],
    key: str | None = None,
    *,
    authorization: str = f"Bearer {API_KEY}",
) -> httpx.Response:
    headers = {"Authorization": authorization}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url + path, data=data, headers=headers)


async def intents_at(raw_url: str, marker: str) -> list[dict[str, Any]]:
    """The PaymentIntents localstripe itself holds for `marker` (bypassing the proxy)."""
    async with httpx.AsyncClient(timeout=30, auth=(API_KEY, "")) as http:
        response = await http.get(raw_url + INTENTS, params={"limit": 10_000})
    response.raise_for_status()
    return [pi for pi in response.json()["data"] if pi["metadata"].get("marker") == marker]


def mismatch_body(key: str) -> dict[str, Any]:
    return {
        "error": {
            "type": "idempotency_error",
            "message": "Keys for idempotent requests can only be used with the same parameters "
            f"they were first used with. Try using a key other than '{key}' if you meant to "
            "execute a different request.",
        }
    }


def in_flight_body(key: str) -> dict[str, Any]:
    return {
        "error": {
            "type": "idempotency_error",
            "code": "idempotency_key_in_use",
            "message": "There is currently another in-progress request using this Idempotent "
            "Key (that probably means you submitted twice, and the other request is still "
            f"going through): {key}. Please try again later.",
        }
    }


def new() -> str:
    return uuid.uuid4().hex


class Clock:
    """An injectable monotonic clock that only moves when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# -- replay -----------------------------------------------------------------------------------


async def test_a_repeated_key_replays_the_first_answer_byte_for_byte(
    localstripe: LocalStripe,
) -> None:
    marker, key = new(), new()
    first = await post(localstripe.url, INTENTS, intent_form(marker), key)
    second = await post(localstripe.url, INTENTS, intent_form(marker), key)

    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert first.headers["Request-Id"].startswith("req_")
    assert first.headers["Original-Request"] == first.headers["Request-Id"]

    assert second.status_code == first.status_code
    assert second.content == first.content
    assert second.headers["Content-Type"] == first.headers["Content-Type"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Original-Request"] == first.headers["Request-Id"]
    assert second.headers["Request-Id"].startswith("req_")
    assert second.headers["Request-Id"] != first.headers["Request-Id"]
    assert len(await intents_at(localstripe.raw_url, marker)) == 1

    # What the proxy prevents: localstripe on its own makes a new PaymentIntent per request.
    for _ in range(2):
        raw = await post(localstripe.raw_url, INTENTS, intent_form(marker), key)
        assert raw.status_code == 200
    assert len(await intents_at(localstripe.raw_url, marker)) == 3


async def test_two_creates_with_one_key_make_one_payment_intent(localstripe: LocalStripe) -> None:
    marker, key = new(), new()
    async with sdk(localstripe.url) as client:
        first = await client.v1.payment_intents.create_async(
            intent_params(marker),  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
        again = await client.v1.payment_intents.create_async(
            intent_params(marker),  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
    assert first.status == "succeeded"
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert [pi["id"] for pi in await intents_at(localstripe.raw_url, marker)] == [first.id]


async def test_a_key_reused_with_other_parameters_is_an_idempotency_error(
    localstripe: LocalStripe,
) -> None:
    marker, key = new(), new()
    async with sdk(localstripe.url) as client:
        await client.v1.payment_intents.create_async(
            intent_params(marker),  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
        with pytest.raises(stripe.IdempotencyError) as other_params:
            await client.v1.payment_intents.create_async(
                intent_params(marker, amount=2_000),  # type: ignore[arg-type]
                {"idempotency_key": key},
            )
        with pytest.raises(stripe.IdempotencyError) as other_path:
            await client.v1.refunds.create_async(
                {"payment_intent": "pi_whatever"}, {"idempotency_key": key}
            )
    for raised in (other_params.value, other_path.value):
        assert raised.http_status == 400
        assert json.loads(raised.http_body or "") == mismatch_body(key)
    assert len(await intents_at(localstripe.raw_url, marker)) == 1

    # The key still answers with its first request's answer.
    async with sdk(localstripe.url) as client:
        replayed = await client.v1.payment_intents.create_async(
            intent_params(marker),  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
    assert replayed.last_response is not None
    assert replayed.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(await intents_at(localstripe.raw_url, marker)) == 1


async def test_a_key_in_flight_is_409_then_the_first_answer_is_replayed(
    localstripe: LocalStripe,
) -> None:
    marker, key = new(), new()
    # SDK -> idempotency proxy (this loop) -> fault proxy holding creates -> localstripe.
    async with (
        FaultProxy(localstripe.raw_url) as hold,
        StandInServer(proxy_app(hold.url)) as proxy,
        sdk(proxy.url) as client,
    ):
        rule = hold.hold("POST", INTENTS)
        first = asyncio.create_task(
            client.v1.payment_intents.create_async(
                intent_params(marker),  # type: ignore[arg-type]
                {"idempotency_key": key},
            )
        )
        await rule.wait_arrived()

        # The v1 SDK raises APIError for any 409 (IdempotencyError only for 400/404).
        with pytest.raises(stripe.APIError) as in_flight:
            await client.v1.payment_intents.create_async(
                intent_params(marker),  # type: ignore[arg-type]
                {"idempotency_key": key},
            )
        assert not isinstance(in_flight.value, stripe.IdempotencyError)
        assert in_flight.value.http_status == 409
        assert json.loads(in_flight.value.http_body or "") == in_flight_body(key)
        assert in_flight.value.error is not None
        assert in_flight.value.error.code == "idempotency_key_in_use"

        # Other parameters under the key are a mismatch even while it is in flight.
        with pytest.raises(stripe.IdempotencyError):
            await client.v1.payment_intents.create_async(
                intent_params(marker, amount=3_000),  # type: ignore[arg-type]
                {"idempotency_key": key},
            )
        assert rule.matched == 1  # neither reached localstripe

        rule.release()
        created = await first
        replayed = await client.v1.payment_intents.create_async(
            intent_params(marker),  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
    assert replayed.id == created.id
    assert replayed.last_response is not None
    assert replayed.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(await intents_at(localstripe.raw_url, marker)) == 1


# -- what is saved ----------------------------------------------------------------------------


async def test_an_upstream_500_is_replayed(provider: ProviderStandIn) -> None:
    provider.script(Reply(500, body={"error": {"type": "api_error", "message": "boom"}}))
    async with StandInServer(proxy_app(provider.url)) as proxy:
        key = new()
        first = await post(proxy.url, INTENTS, {"amount": "1"}, key)
        second = await post(proxy.url, INTENTS, {"amount": "1"}, key)
        assert first.status_code == second.status_code == 500
        assert second.content == first.content
        assert second.headers["Idempotent-Replayed"] == "true"
        assert provider.count() == 1

        # The SDK sees the replayed 500 as Stripe's own.
        async with sdk(proxy.url) as client:
            with pytest.raises(stripe.APIError) as raised:
                await client.v1.payment_intents.create_async(
                    {"amount": 1},  # type: ignore[typeddict-item]
                    {"idempotency_key": key},
                )
        assert raised.value.http_status == 500
        assert provider.count() == 1


async def test_no_answer_from_upstream_is_not_saved() -> None:
    port = free_port()
    async with StandInServer(proxy_app(f"http://127.0.0.1:{port}")) as proxy:
        key = new()
        down = await post(proxy.url, INTENTS, {"amount": "1"}, key)
        assert down.status_code == 502
        assert down.json()["error"]["type"] == "api_error"

        async with ProviderStandIn(port=port) as upstream:
            retried = await post(proxy.url, INTENTS, {"amount": "1"}, key)
            assert retried.status_code == 200
            assert "Idempotent-Replayed" not in retried.headers
            again = await post(proxy.url, INTENTS, {"amount": "1"}, key)
            assert again.headers["Idempotent-Replayed"] == "true"
            assert upstream.count() == 1


async def test_keys_expire_24_hours_after_first_use(provider: ProviderStandIn) -> None:
    clock = Clock()
    layer = IdempotencyLayer(clock=clock)
    async with StandInServer(proxy_app(provider.url, layer=layer)) as proxy:
        key = new()
        await post(proxy.url, INTENTS, {"amount": "1"}, key)
        clock.now += TTL_S - 1
        kept = await post(proxy.url, INTENTS, {"amount": "1"}, key)
        assert kept.headers["Idempotent-Replayed"] == "true"
        assert provider.count() == 1

        clock.now += 1
        # Expired: the key is new again, even for other parameters.
        fresh = await post(proxy.url, INTENTS, {"amount": "2"}, key)
        assert fresh.status_code == 200
        assert "Idempotent-Replayed" not in fresh.headers
        assert provider.count() == 2
        assert len(layer) == 1  # the expired entry is gone, not kept beside the new one


async def test_keys_are_scoped_per_api_key(provider: ProviderStandIn) -> None:
    async with StandInServer(proxy_app(provider.url)) as proxy:
        key = new()
        mine = await post(proxy.url, INTENTS, {"amount": "1"}, key)
        theirs = await post(
            proxy.url, INTENTS, {"amount": "2"}, key, authorization=f"Bearer {OTHER_API_KEY}"
        )
        assert mine.status_code == theirs.status_code == 200
        assert "Idempotent-Replayed" not in theirs.headers
        assert provider.count() == 2

        # Basic auth with the same secret is the same API key, so the same key space.
        basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
        again = await post(proxy.url, INTENTS, {"amount": "1"}, key, authorization=f"Basic {basic}")
        assert again.headers["Idempotent-Replayed"] == "true"
        assert provider.count() == 2


# -- what passes through ----------------------------------------------------------------------


async def test_other_requests_pass_through(provider: ProviderStandIn) -> None:
    async with StandInServer(proxy_app(provider.url)) as proxy, httpx.AsyncClient() as http:
        key = new()
        for _ in range(2):  # a key on a GET is ignored, as Stripe ignores it
            got = await http.get(proxy.url + INTENTS, headers={"Idempotency-Key": key})
            assert got.status_code == 200
            assert "Idempotent-Replayed" not in got.headers
            assert got.headers["Request-Id"].startswith("req_")
        for _ in range(2):
            assert (await post(proxy.url, INTENTS, {"amount": "1"})).status_code == 200
        assert provider.count() == 4

        too_long = await post(proxy.url, INTENTS, {"amount": "1"}, "k" * 256)
        assert too_long.status_code == 400
        assert too_long.json()["error"]["type"] == "invalid_request_error"
        assert provider.count() == 4
        assert (await post(proxy.url, INTENTS, {"amount": "1"}, "k" * 255)).status_code == 200


async def test_reads_and_localstripe_admin_calls_pass_through(localstripe: LocalStripe) -> None:
    marker = new()
    created = await post(localstripe.url, INTENTS, intent_form(marker), new())
    intent_id = created.json()["id"]
    async with httpx.AsyncClient(auth=(API_KEY, ""), timeout=30) as http:
        via_proxy = await http.get(f"{localstripe.url}{INTENTS}/{intent_id}")
        direct = await http.get(f"{localstripe.raw_url}{INTENTS}/{intent_id}")
        assert via_proxy.status_code == direct.status_code == 200
        assert via_proxy.json() == direct.json()
        listed = await http.get(f"{localstripe.url}{INTENTS}", params={"limit": 1})
        assert len(listed.json()["data"]) == 1  # the query string reached localstripe

        webhook = await http.post(
            f"{localstripe.url}/_config/webhooks/standins",
            json={"url": "http://127.0.0.1:9/hook", "secret": "whsec_x", "events": ["none"]},
        )
        assert webhook.status_code == 200, webhook.text


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_local_stripe_serves_the_proxy_and_stops_both(tmp_path: Path) -> None:
    server = LocalStripe(tmp_path / "ls")
    url = server.start()
    pids = [server.pid, server.proxy_pid]
    try:
        assert url == server.url != server.raw_url
        assert all(pid is not None and psutil.pid_exists(pid) for pid in pids)
        assert server.start() == url  # idempotent
    finally:
        server.stop()
    assert all(pid is not None and _gone(pid) for pid in pids)
    assert (tmp_path / "ls" / "stripe-proxy.log").exists()


# -- the fast stand-in ------------------------------------------------------------------------


async def test_fast_stand_in_serves_the_adapters_calls_through_the_sdk(
    fast: StripeStandIn,
) -> None:
    async with sdk(fast.url) as client:
        pis = client.v1.payment_intents
        paid = await pis.create_async(
            intent_params(new()),  # type: ignore[arg-type]
            {"idempotency_key": f"tt-payment-{new()}"},
        )
        assert paid.status == "succeeded"
        assert (await pis.retrieve_async(paid.id)).status == "succeeded"
        charge = await client.v1.charges.retrieve_async(str(paid.latest_charge))
        assert charge.payment_intent == paid.id
        assert charge.status == "succeeded"

        refund = await client.v1.refunds.create_async(
            {"payment_intent": paid.id, "amount": 400, "metadata": {"reason": "x"}},
            {"idempotency_key": new()},
        )
        assert refund.status == "succeeded"
        assert (await client.v1.refunds.retrieve_async(refund.id)).amount == 400
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.refunds.create_async(
                {"payment_intent": paid.id, "amount": 601}, {"idempotency_key": new()}
            )
        with pytest.raises(stripe.InvalidRequestError):
            await pis.cancel_async(paid.id, options={"idempotency_key": new()})

        # 3-D Secure: requires_action, then cancelled.
        action = await pis.create_async(
            intent_params(new(), pm="pm_card_threeDSecure2Required")  # type: ignore[arg-type]
            | {"return_url": "https://example.com/back"},
            {"idempotency_key": new()},
        )
        assert action.status == "requires_action"
        assert action.client_secret
        assert action.next_action is not None
        assert action.next_action.redirect_to_url is not None
        assert action.next_action.redirect_to_url.url
        cancelled = await pis.cancel_async(action.id, options={"idempotency_key": new()})
        assert cancelled.status == "canceled"

        # A decline at charge is a CardError naming the PaymentIntent, as Stripe's is.
        card = await client.v1.payment_methods.create_async(
            {
                "type": "card",
                "card": {"number": "4000000000000341", "exp_month": 12, "exp_year": 2030},
            }
        )
        with pytest.raises(stripe.CardError) as declined:
            await pis.create_async(
                intent_params(new(), pm=card.id),  # type: ignore[arg-type]
                {"idempotency_key": new()},
            )
        assert declined.value.code == "card_declined"
        assert declined.value.error is not None
        assert declined.value.error.payment_intent is not None
        failed = await pis.retrieve_async(declined.value.error.payment_intent.id)
        assert failed.status == "requires_payment_method"

        payout = await client.v1.payouts.create_async(
            {"amount": 5_000, "currency": "usd", "method": "standard", "metadata": {}},
            {"idempotency_key": new()},
        )
        assert payout.status == "pending"
        assert payout.arrival_date

        with pytest.raises(stripe.InvalidRequestError) as missing:
            await pis.retrieve_async("pi_missing")
        assert missing.value.http_status == 404
        assert missing.value.code == "resource_missing"

        # The same idempotency layer as the proxy's.
        key = new()
        once = await pis.create_async(
            intent_params("fast"),  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
        twice = await pis.create_async(
            intent_params("fast"),  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
        assert twice.id == once.id
        with pytest.raises(stripe.IdempotencyError):
            await pis.create_async(
                intent_params("fast", amount=1),  # type: ignore[arg-type]
                {"idempotency_key": key},
            )


CALLS = 400


async def _sequential_creates(url: str, calls: int = CALLS) -> float:
    """Mean client-side seconds per create+confirm, one keep-alive connection, one at a time."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": API_VERSION}
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        for _ in range(calls):
            async with http.post(
                url + INTENTS,
                data=intent_form("bench"),
                headers={**headers, "Idempotency-Key": new()},
            ) as response:
                assert response.status == 200
                await response.read()
        return (time.perf_counter() - started) / calls


async def _stats(url: str) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        stats: dict[str, float] = (await http.get(url + "/_standin/stats")).json()
        return stats


async def test_fast_stand_in_answers_in_well_under_a_millisecond(
    fast: StripeStandIn, tmp_path: Path
) -> None:
    """Server-side handler time of the fast stand-in, and (printed) the proxy's per-call cost."""
    await _sequential_creates(fast.url, 50)  # warm-up
    before = await _stats(fast.url)
    direct_s = await _sequential_creates(fast.url)
    after = await _stats(fast.url)
    handler_ms = (
        (after["handler_seconds"] - before["handler_seconds"])
        / (after["requests"] - before["requests"])
        * 1000
    )
    with StripeStandIn(tmp_path / "proxy", upstream=fast.url) as proxy:
        await _sequential_creates(proxy.url, 50)
        proxied_s = await _sequential_creates(proxy.url)
    print(
        f"\nfast stripe stand-in: handler {handler_ms:.3f} ms/call (server-side), "
        f"{direct_s * 1000:.3f} ms/call round trip; through the idempotency proxy "
        f"{proxied_s * 1000:.3f} ms/call (+{(proxied_s - direct_s) * 1000:.3f} ms)"
    )
    assert after["requests"] - before["requests"] == CALLS
    assert handler_ms < 1.0
