"""The Square stand-in (meshdev.standins.square) driven through the official `squareup` SDK
(`AsyncSquare(base_url=..., token=...)`, as the integration service will configure it), and raw
HTTP where the SDK has no call (the authorize redirect). Webhooks are checked with the SDK's own
verifier, `square.utils.webhooks_helper.verify_signature`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from square import AsyncSquare
from square.core.api_error import ApiError
from square.utils.webhooks_helper import verify_signature

from meshdev.embedded import SquareStandIn
from meshdev.standins.apibase import pkce_challenge
from meshdev.standins.square import (
    ALL_SCOPES,
    DEV_ACCESS_TOKEN,
    DEV_APPLICATION_ID,
    DEV_APPLICATION_SECRET,
    DEV_LOCATION_ID,
    DEV_MERCHANT_ID,
    DEV_SIGNATURE_KEY,
    SIGNATURE_HEADER,
    SquareServer,
)
from meshdev.testing.webhooks import WebhookReceiver

REDIRECT = "http://127.0.0.1:1/integration/oauth/callback"
NO_RETRY: Any = {"max_retries": 0}

# squareup's models read pydantic's deprecated `__fields__` on every parse.
pytestmark = pytest.mark.filterwarnings("ignore:The `__fields__` attribute is deprecated")


@pytest.fixture
async def square() -> AsyncIterator[SquareServer]:
    async with SquareServer() as server:
        yield server


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


def client(
    server: SquareServer | SquareStandIn, token: str | None = DEV_ACCESS_TOKEN
) -> AsyncSquare:
    return AsyncSquare(base_url=server.url, token=token)


async def authorize(
    server: SquareServer, *, state: str, challenge: str | None, scopes: str = " ".join(ALL_SCOPES)
) -> str:
    """The seller's consent, as the browser follows it: the redirect carries code and state."""
    params = {"client_id": DEV_APPLICATION_ID, "scope": scopes, "state": state}
    params["redirect_uri"] = REDIRECT
    if challenge is not None:
        params["code_challenge"] = challenge
    async with httpx.AsyncClient() as http:
        answer = await http.get(server.url + "/oauth2/authorize", params=params)
    assert answer.status_code == 302
    location = httpx.URL(answer.headers["location"])
    assert str(location).startswith(REDIRECT)
    assert location.params["state"] == state
    return location.params["code"]


def item(ref: str, name: str, amount: int = 2500) -> dict[str, Any]:
    """A ticket type as the sync engine would send it: `#<our id>` and our id as the SKU."""
    return {
        "type": "ITEM",
        "id": f"#{ref}",
        "item_data": {
            "name": name,
            "variations": [
                {
                    "type": "ITEM_VARIATION",
                    "id": f"#{ref}-v",
                    "item_variation_data": {
                        "name": "General admission",
                        "pricing_type": "FIXED_PRICING",
                        "price_money": {"amount": amount, "currency": "USD"},
                        "sku": f"sku-{ref}",
                    },
                }
            ],
        },
    }


# -- OAuth ----------------------------------------------------------------------------------------


async def test_pkce_dance_refresh_rotation_and_refusals(square: SquareServer) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await authorize(square, state="st-1", challenge=pkce_challenge(verifier))
    anon = client(square, token=None)

    with pytest.raises(ApiError) as wrong_verifier:
        await anon.o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            grant_type="authorization_code",
            code=code,
            code_verifier=secrets.token_urlsafe(48),
            redirect_uri=REDIRECT,
            request_options=NO_RETRY,
        )
    assert wrong_verifier.value.status_code == 400

    token = await anon.o_auth.obtain_token(
        client_id=DEV_APPLICATION_ID,
        grant_type="authorization_code",
        code=code,
        code_verifier=verifier,
        redirect_uri=REDIRECT,
    )
    assert token.merchant_id == DEV_MERCHANT_ID
    assert token.access_token and token.refresh_token and token.refresh_token_expires_at
    [location] = (await client(square, token.access_token).locations.list()).locations or []
    assert location.id == DEV_LOCATION_ID

    with pytest.raises(ApiError) as replayed:  # a code is single-use
        await anon.o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            grant_type="authorization_code",
            code=code,
            code_verifier=verifier,
            redirect_uri=REDIRECT,
            request_options=NO_RETRY,
        )
    assert replayed.value.status_code == 401

    # PKCE refresh tokens are single-use: each refresh returns a new one.
    refreshed = await anon.o_auth.obtain_token(
        client_id=DEV_APPLICATION_ID, grant_type="refresh_token", refresh_token=token.refresh_token
    )
    assert refreshed.refresh_token != token.refresh_token
    assert refreshed.access_token != token.access_token
    with pytest.raises(ApiError) as spent:
        await anon.o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            grant_type="refresh_token",
            refresh_token=token.refresh_token,
            request_options=NO_RETRY,
        )
    assert spent.value.status_code == 401
    assert square.stats.calls["oauth.refresh"] == 2

    # Unused for more than 7 days, the newest refresh token expires; 30 days end the access token.
    square.advance_clock(8 * 86400)
    with pytest.raises(ApiError) as expired:
        await anon.o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            grant_type="refresh_token",
            refresh_token=refreshed.refresh_token,
            request_options=NO_RETRY,
        )
    assert expired.value.status_code == 401
    square.advance_clock(23 * 86400)
    with pytest.raises(ApiError) as stale:
        await client(square, refreshed.access_token).locations.list(request_options=NO_RETRY)
    assert stale.value.status_code == 401
    assert stale.value.body["errors"][0]["code"] == "ACCESS_TOKEN_EXPIRED"


async def test_code_flow_needs_the_secret_keeps_its_refresh_token_and_revoke_ends_it(
    square: SquareServer, hooks: WebhookReceiver
) -> None:
    square.webhook_url = hooks.url + "/square"
    code = await authorize(square, state="st-2", challenge=None, scopes="MERCHANT_PROFILE_READ")
    anon = client(square, token=None)
    with pytest.raises(ApiError) as no_secret:
        await anon.o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            grant_type="authorization_code",
            code=code,
            request_options=NO_RETRY,
        )
    assert no_secret.value.status_code == 400
    with pytest.raises(ApiError) as wrong_secret:
        await anon.o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            client_secret="sq0csp-wrong",
            grant_type="authorization_code",
            code=code,
            request_options=NO_RETRY,
        )
    assert wrong_secret.value.status_code == 401
    token = await anon.o_auth.obtain_token(
        client_id=DEV_APPLICATION_ID,
        client_secret=DEV_APPLICATION_SECRET,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT,
    )
    assert token.refresh_token_expires_at is None
    again = await anon.o_auth.obtain_token(
        client_id=DEV_APPLICATION_ID,
        client_secret=DEV_APPLICATION_SECRET,
        grant_type="refresh_token",
        refresh_token=token.refresh_token,
    )
    assert again.refresh_token == token.refresh_token  # code flow: multi-use

    api = client(square, again.access_token)
    with pytest.raises(ApiError) as scope:  # only MERCHANT_PROFILE_READ was granted
        await api.catalog.list(types="ITEM", request_options=NO_RETRY)
    assert scope.value.status_code == 403
    assert scope.value.body["errors"][0]["code"] == "INSUFFICIENT_SCOPES"

    status = await api.o_auth.retrieve_token_status()
    assert status.merchant_id == DEV_MERCHANT_ID and status.scopes == ["MERCHANT_PROFILE_READ"]

    # Square's revoke authenticates with "Client <application secret>", not the Bearer token.
    with pytest.raises(ApiError) as bearer:
        await api.o_auth.revoke_token(
            client_id=DEV_APPLICATION_ID, access_token=again.access_token, request_options=NO_RETRY
        )
    assert bearer.value.status_code == 401
    revoked = await api.o_auth.revoke_token(
        client_id=DEV_APPLICATION_ID,
        access_token=again.access_token,
        request_options={
            "max_retries": 0,
            "additional_headers": {"Authorization": f"Client {DEV_APPLICATION_SECRET}"},
        },
    )
    assert revoked.success is True
    for access in (token.access_token, again.access_token):
        with pytest.raises(ApiError) as gone:
            await client(square, access).locations.list(request_options=NO_RETRY)
        assert gone.value.body["errors"][0]["code"] == "ACCESS_TOKEN_REVOKED"
    with pytest.raises(ApiError):
        await anon.o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            client_secret=DEV_APPLICATION_SECRET,
            grant_type="refresh_token",
            refresh_token=token.refresh_token,
            request_options=NO_RETRY,
        )
    [hook] = await hooks.wait("/square", 1)
    assert b'"type":"oauth.authorization.revoked"' in hook.body


async def test_denied_consent_and_unknown_tokens(square: SquareServer) -> None:
    async with httpx.AsyncClient() as http:
        denied = await http.get(
            square.url + "/oauth2/authorize",
            params={
                "client_id": DEV_APPLICATION_ID,
                "scope": "ITEMS_READ",
                "state": "s",
                "redirect_uri": REDIRECT,
                "deny": "1",
            },
        )
    assert denied.status_code == 302
    assert httpx.URL(denied.headers["location"]).params["error"] == "access_denied"
    with pytest.raises(ApiError) as unknown:
        await client(square, "EAAAnot-a-token").locations.list(request_options=NO_RETRY)
    assert unknown.value.status_code == 401
    assert unknown.value.body["errors"][0]["code"] == "UNAUTHORIZED"
    assert square.stats.unauthorized == 1


# -- catalog --------------------------------------------------------------------------------------


async def test_batch_upsert_in_batches_is_idempotent_and_pages_back(square: SquareServer) -> None:
    api = client(square)
    products = [item(f"p{i:04d}", f"Show {i}") for i in range(40)]
    batches: Any = [{"objects": products[i : i + 15]} for i in range(0, 40, 15)]
    first = await api.catalog.batch_upsert(idempotency_key="sync-1", batches=batches)
    assert len(first.objects or []) == 40
    assert len(first.id_mappings or []) == 80  # items and their variations

    # A retry with the same key (e.g. after a lost answer) creates nothing new.
    again = await api.catalog.batch_upsert(idempotency_key="sync-1", batches=batches)
    assert [m.object_id for m in again.id_mappings or []] == [
        m.object_id for m in first.id_mappings or []
    ]
    assert square.replays.replayed == 1
    assert square.duplicates() == {}
    assert square.count_ref("p0007") == 1 and square.count_ref("sku-p0007") == 1
    assert len(square.live_objects(kind="ITEM")) == 40

    with pytest.raises(ApiError) as reused:
        await api.catalog.batch_upsert(
            idempotency_key="sync-1",
            batches=[{"objects": [item("other", "Other")]}],
            request_options=NO_RETRY,
        )
    assert reused.value.body["errors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"

    pager = await api.catalog.list(types="ITEM")
    listed = [obj.id async for obj in pager]
    assert sorted(listed) == sorted(o.id for o in first.objects or [])


async def test_batch_limits_at_volume(square: SquareServer) -> None:
    """10,000 objects in batches of 1,000, over raw HTTP: the SDK's model parsing costs about
    5 ms per catalog object, which would make this test (not the stand-in) slow."""
    headers = {"Authorization": f"Bearer {DEV_ACCESS_TOKEN}"}
    products = [item(f"v{i:04d}", f"Show {i}") for i in range(5000)]
    batches = [{"objects": products[i : i + 500]} for i in range(0, 5000, 500)]
    async with httpx.AsyncClient(base_url=square.url, headers=headers, timeout=60) as http:
        upsert = "/v2/catalog/batch-upsert"
        answer = await http.post(upsert, json={"idempotency_key": "vol", "batches": batches})
        assert answer.status_code == 200
        assert len(answer.json()["id_mappings"]) == 10_000
        replay = await http.post(upsert, json={"idempotency_key": "vol", "batches": batches})
        assert replay.content == answer.content
        assert len(square.live_objects(kind="ITEM")) == 5000 and square.duplicates() == {}

        one_more = [{"objects": [item("over", "Over")]}]
        too_many = await http.post(
            upsert, json={"idempotency_key": "vol-2", "batches": batches + one_more}
        )
        too_big = await http.post(
            upsert,
            json={
                "idempotency_key": "vol-3",
                "batches": [{"objects": products[:500] + one_more[0]["objects"]}],
            },
        )
        for refused in (too_many, too_big):
            assert refused.status_code == 400
            assert refused.json()["errors"][0]["category"] == "INVALID_REQUEST_ERROR"
        assert square.count_ref("over") == 0

        cursor, seen = None, 0
        while True:
            page = await http.post(
                "/v2/catalog/search",
                json={
                    "object_types": ["ITEM"],
                    "limit": 1000,
                    **({"cursor": cursor} if cursor else {}),
                },
            )
            seen += len(page.json()["objects"])
            cursor = page.json().get("cursor")
            if not cursor:
                break
        assert seen == 5000 and square.stats.calls["catalog.search"] == 5


async def test_a_bad_batch_is_refused_whole_while_the_others_land(square: SquareServer) -> None:
    api = client(square)
    bad = item("bad-1", "Bad")
    bad["item_data"]["variations"][0]["item_variation_data"]["price_money"]["amount"] = "12.50"
    answer = await api.catalog.batch_upsert(
        idempotency_key="mixed",
        batches=[
            {"objects": [item("ok-1", "Fine"), item("ok-2", "Fine too")]},
            {"objects": [item("bad-0", "Also refused"), bad]},
        ],
    )
    assert [o.item_data.name for o in answer.objects or [] if o.item_data] == ["Fine", "Fine too"]
    assert answer.errors and answer.errors[0].field and "price_money" in answer.errors[0].field
    assert square.count_ref("bad-0") == 0 and square.count_ref("ok-2") == 1


async def test_updates_check_versions_and_search_finds_only_what_changed(
    square: SquareServer,
) -> None:
    api = client(square)
    created = await api.catalog.batch_upsert(
        idempotency_key="c1", batches=[{"objects": [item("e1", "Jazz night"), item("e2", "Opera")]}]
    )
    jazz = (created.objects or [])[0]
    mark = (
        await api.catalog.search(object_types=["ITEM"], limit=1, request_options=NO_RETRY)
    ).latest_time
    square.advance_clock(1)

    stale: Any = {"type": "ITEM", "id": jazz.id, "version": 1, "item_data": {"name": "Jazz"}}
    with pytest.raises(ApiError) as mismatch:
        await api.catalog.object.upsert(
            idempotency_key="u0", object=stale, request_options=NO_RETRY
        )
    assert mismatch.value.body["errors"][0]["code"] == "VERSION_MISMATCH"
    current = jazz.model_dump(exclude_none=True)
    current["item_data"]["name"] = "Jazz night (late show)"
    updated = await api.catalog.object.upsert(idempotency_key="u1", object=current)
    assert updated.catalog_object and updated.catalog_object.version != jazz.version

    changed = await api.catalog.search(object_types=["ITEM"], begin_time=mark)
    assert [o.id for o in changed.objects or []] == [jazz.id]
    found = await api.catalog.search(
        object_types=["ITEM"], query={"text_query": {"keywords": ["ope"]}}
    )
    assert [o.item_data.name for o in found.objects or [] if o.item_data] == ["Opera"]

    deleted = await api.catalog.batch_delete(object_ids=[jazz.id])
    assert len(deleted.deleted_object_ids or []) == 2  # the item and its variation
    with_deleted = await api.catalog.search(
        object_types=["ITEM"], include_deleted_objects=True, begin_time=mark
    )
    assert [(o.id, o.is_deleted) for o in with_deleted.objects or []] == [(jazz.id, True)]


async def test_one_catalog_write_at_a_time_per_seller(square: SquareServer) -> None:
    square.faults.latency_s = 0.3  # writes take a while: the second arrives during the first
    api = client(square)
    results = await asyncio.gather(
        api.catalog.batch_upsert(
            idempotency_key="w1", batches=[{"objects": [item("w1", "A")]}], request_options=NO_RETRY
        ),
        api.catalog.batch_upsert(
            idempotency_key="w2", batches=[{"objects": [item("w2", "B")]}], request_options=NO_RETRY
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(refused) == 1 and refused[0].status_code == 429
    assert refused[0].body["errors"][0]["code"] == "RATE_LIMITED"
    assert square.stats.concurrency_limited == 1


# -- customers and inventory ----------------------------------------------------------------------


async def test_customers_create_idempotently_update_with_versions_and_page(
    square: SquareServer,
) -> None:
    api = client(square)
    first = await api.customers.create(
        idempotency_key="cust-1",
        given_name="Ada",
        email_address="ada@example.test",
        reference_id="b-1",
    )
    replay = await api.customers.create(
        idempotency_key="cust-1",
        given_name="Ada",
        email_address="ada@example.test",
        reference_id="b-1",
    )
    assert first.customer and replay.customer and replay.customer.id == first.customer.id
    assert square.count_ref("b-1") == 1

    with pytest.raises(ApiError) as empty:
        await api.customers.create(
            idempotency_key="cust-x", note="nobody", request_options=NO_RETRY
        )
    assert empty.value.status_code == 400

    with pytest.raises(ApiError) as stale:
        await api.customers.update(
            first.customer.id, family_name="Lovelace", version=7, request_options=NO_RETRY
        )
    assert stale.value.body["errors"][0]["code"] == "VERSION_MISMATCH"
    updated = await api.customers.update(first.customer.id, family_name="Lovelace", version=0)
    assert updated.customer and updated.customer.version == 1

    bulk = await api.customers.batch_create(
        customers={
            f"bulk-{i}": {"given_name": f"Buyer {i}", "reference_id": f"b-{i + 100}"}
            for i in range(30)
        }
    )
    assert len(bulk.responses or {}) == 30
    pager = await api.customers.list(limit=7)
    assert len([c async for c in pager]) == 31
    found = await api.customers.search(query={"filter": {"reference_id": {"exact": "b-105"}}})
    assert [c.given_name for c in found.customers or []] == ["Buyer 5"]


async def test_inventory_changes_and_counts(square: SquareServer) -> None:
    api = client(square)
    created = await api.catalog.batch_upsert(
        idempotency_key="inv", batches=[{"objects": [item(f"t{i}", f"T{i}") for i in range(3)]}]
    )
    variations = [
        o.item_data.variations[0].id
        for o in created.objects or []
        if o.item_data and o.item_data.variations
    ]
    counted: Any = [
        {
            "type": "PHYSICAL_COUNT",
            "physical_count": {
                "catalog_object_id": vid,
                "state": "IN_STOCK",
                "location_id": DEV_LOCATION_ID,
                "quantity": "100",
                "occurred_at": "2026-01-01T00:00:00Z",
            },
        }
        for vid in variations
    ]
    sold: Any = {
        "type": "ADJUSTMENT",
        "adjustment": {
            "catalog_object_id": variations[0],
            "from_state": "IN_STOCK",
            "to_state": "SOLD",
            "location_id": DEV_LOCATION_ID,
            "quantity": "3",
            "occurred_at": "2026-01-01T00:01:00Z",
        },
    }
    await api.inventory.batch_create_changes(idempotency_key="count-1", changes=[*counted, sold])
    await api.inventory.batch_create_changes(idempotency_key="count-1", changes=[*counted, sold])
    pager = await api.inventory.batch_get_counts(catalog_object_ids=variations)
    counts = {c.catalog_object_id: c.quantity async for c in pager}
    assert counts == {variations[0]: "97", variations[1]: "100", variations[2]: "100"}

    unknown: Any = [
        {
            **counted[0],
            "physical_count": {**counted[0]["physical_count"], "catalog_object_id": "NOPE"},
        }
    ]
    with pytest.raises(ApiError) as refused:
        await api.inventory.batch_create_changes(
            idempotency_key="count-2", changes=unknown, request_options=NO_RETRY
        )
    assert refused.value.status_code == 400


# -- limits and faults ----------------------------------------------------------------------------


async def test_429_rate_limited_beyond_the_rate_with_retry_after(square: SquareServer) -> None:
    square.limit.configure(0.01, burst=5)  # five now, the next one in 100 s
    api = client(square)
    results = await asyncio.gather(
        *(api.locations.list(request_options=NO_RETRY) for _ in range(20)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(refused) == 15
    assert {r.status_code for r in refused} == {429}
    assert refused[0].body["errors"][0] == {
        "category": "RATE_LIMIT_ERROR",
        "code": "RATE_LIMITED",
        "detail": "Rate limit exceeded",
    }
    assert int(refused[0].headers["retry-after"]) >= 1
    assert square.stats.rate_limited == 15


async def test_scripted_5xx_then_the_sdk_retry_gets_through(square: SquareServer) -> None:
    api = client(square)
    square.fail_next(1, 503)
    with pytest.raises(ApiError) as failed:
        await api.locations.list(request_options=NO_RETRY)
    assert failed.value.status_code == 503
    square.fail_next(1, 500)
    answer = await api.locations.list(request_options={"max_retries": 1})
    assert answer.locations
    assert square.stats.calls["locations.list"] == 3 and square.stats.scripted_faults == 2


# -- webhooks -------------------------------------------------------------------------------------


async def test_webhooks_are_signed_over_url_and_body_and_can_be_replayed(
    square: SquareServer, hooks: WebhookReceiver
) -> None:
    url = hooks.url + "/webhooks/square"
    square.webhook_url = url
    created = await client(square).customers.create(idempotency_key="h1", given_name="Grace")
    [hook] = await hooks.wait("/webhooks/square", 1)
    assert verify_signature(
        request_body=hook.text,
        signature_header=hook.headers[SIGNATURE_HEADER],
        signature_key=DEV_SIGNATURE_KEY,
        notification_url=url,
    )
    event = __import__("json").loads(hook.body)
    assert event["type"] == "customer.created" and event["merchant_id"] == DEV_MERCHANT_ID
    assert created.customer and event["data"]["id"] == created.customer.id
    assert not verify_signature(
        request_body=hook.text,
        signature_header=hook.headers[SIGNATURE_HEADER],
        signature_key=DEV_SIGNATURE_KEY,
        notification_url=url + "?other",
    )

    again = await square.resend(event["event_id"])
    assert again.body == hook.body and again.headers["square-retry-number"] == "1"
    forged = await square.emit("catalog.version.updated", {"type": "catalog"}, forge=True)
    assert not verify_signature(
        request_body=forged.body.decode(),
        signature_header=forged.headers[SIGNATURE_HEADER],
        signature_key=DEV_SIGNATURE_KEY,
        notification_url=url,
    )
    assert len(hooks.at("/webhooks/square")) == 3


# -- as a process ---------------------------------------------------------------------------------


async def test_square_standin_process_serves_the_sdk_and_its_control_api(tmp_path: Path) -> None:
    with SquareStandIn(tmp_path, rate_per_s=100) as server:
        api = client(server)
        await api.catalog.batch_upsert(
            idempotency_key="p", batches=[{"objects": [item("x1", "X")]}]
        )
        code = await asyncio.to_thread(server.authorize, scopes=["ITEMS_READ"])
        token = await client(server, None).o_auth.obtain_token(
            client_id=DEV_APPLICATION_ID,
            client_secret=DEV_APPLICATION_SECRET,
            grant_type="authorization_code",
            code=code,
        )
        assert token.access_token
        refs = await asyncio.to_thread(server.refs)
        assert refs["catalog"] == {"x1": 1, "sku-x1": 1} and refs["duplicates"] == {}
        await asyncio.to_thread(server.fail_next, 1, 500)
        with pytest.raises(ApiError):
            await api.locations.list(request_options=NO_RETRY)
        settings = await asyncio.to_thread(server.settings)
        assert settings["rate_limit"]["rate_per_s"] == 100
        assert settings["stats"]["calls"]["catalog.batch_upsert"] == 1
