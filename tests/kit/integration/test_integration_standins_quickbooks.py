"""The QuickBooks Online stand-in (meshdev.standins.quickbooks) driven through the official
`intuit-oauth` AuthClient (pointed at the stand-in's discovery document) and `python-quickbooks`
(`api_url_v3` overridden), as the integration service will configure them; raw HTTP only for the
consent redirect. Webhook signatures are checked with python-quickbooks' own
`validate_webhook_signature`.

Both SDKs are synchronous (requests): they run in threads while the stand-in serves this event
loop. requests-oauthlib refuses plain-HTTP URLs unless `OAUTHLIB_INSECURE_TRANSPORT=1`, which
dev and test set (the real API is HTTPS).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from intuitlib.client import AuthClient
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import (
    AuthorizationException,
    QuickbooksException,
    SevereException,
    ValidationException,
)
from quickbooks.objects.base import Ref
from quickbooks.objects.company_info import CompanyInfo
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.item import Item
from quickbooks.objects.refundreceipt import RefundReceipt
from quickbooks.objects.salesreceipt import SalesReceipt

from meshdev.embedded import QuickBooksStandIn
from meshdev.standins.quickbooks import (
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    DEV_REALM_ID,
    DEV_VERIFIER_TOKEN,
    SIGNATURE_HEADER,
    QuickBooksServer,
    parse_query,
)
from meshdev.testing.webhooks import WebhookReceiver

REDIRECT = "http://127.0.0.1:1/integration/oauth/callback"
SCOPE = "com.intuit.quickbooks.accounting"


@pytest.fixture(autouse=True)
def plain_http_oauth(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@pytest.fixture
async def qbo() -> AsyncIterator[QuickBooksServer]:
    async with QuickBooksServer() as server:
        yield server


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


def auth_client(
    server: QuickBooksServer | QuickBooksStandIn, secret: str = DEV_CLIENT_SECRET
) -> AuthClient:
    return AuthClient(
        DEV_CLIENT_ID,
        secret,
        REDIRECT,
        environment=server.url + "/.well-known/openid_configuration",
    )


async def consent(server: QuickBooksServer, state: str = "st") -> tuple[str, str]:
    """The user's consent as the browser follows it: (code, realmId)."""
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            server.url + "/connect/oauth2",
            params={
                "client_id": DEV_CLIENT_ID,
                "response_type": "code",
                "scope": SCOPE,
                "redirect_uri": REDIRECT,
                "state": state,
            },
        )
    assert answer.status_code == 302
    location = httpx.URL(answer.headers["location"])
    assert location.params["state"] == state
    return location.params["code"], location.params["realmId"]


async def connect(server: QuickBooksServer) -> AuthClient:
    code, realm = await consent(server)
    auth = await asyncio.to_thread(auth_client, server)
    await asyncio.to_thread(auth.get_bearer_token, code, realm)
    return auth


def books(server: QuickBooksServer | QuickBooksStandIn, auth: AuthClient) -> QuickBooks:
    qb = QuickBooks(
        auth_client=auth,
        refresh_token=auth.refresh_token,
        company_id=DEV_REALM_ID,
        minorversion=75,
    )
    qb.api_url_v3 = server.url + "/v3"
    return qb


def ref(value: str) -> Ref:
    r = Ref()
    r.value = value
    return r


def ticket_item(name: str, account: str | None = "1") -> Item:
    item = Item()
    item.Name = name
    item.Type = "Service"
    if account is not None:
        item.IncomeAccountRef = ref(account)
    return item


def receipt(
    kind: type[SalesReceipt] | type[RefundReceipt],
    item_id: str,
    amount: str,
    *,
    doc: str,
    qty: int = 1,
    unit: str | None = None,
) -> Any:
    line = SalesItemLine()
    line.Amount = Decimal(amount)
    detail = SalesItemLineDetail()
    detail.ItemRef = ref(item_id)
    detail.Qty = qty
    detail.UnitPrice = Decimal(unit or amount)
    line.SalesItemLineDetail = detail
    txn = kind()
    txn.Line.append(line)
    txn.DocNumber = doc
    txn.PrivateNote = f"tickettoken payment {doc}"
    return txn


# -- OAuth ----------------------------------------------------------------------------------------


async def test_oauth_dance_rotation_grace_and_invalid_grant(qbo: QuickBooksServer) -> None:
    code, realm = await consent(qbo)
    assert realm == DEV_REALM_ID
    wrong = await asyncio.to_thread(auth_client, qbo, "not-the-secret")
    with pytest.raises(AuthClientError) as client_refused:
        await asyncio.to_thread(wrong.get_bearer_token, code, realm)
    assert client_refused.value.status_code == 401
    assert json.loads(client_refused.value.content) == {"error": "invalid_client"}

    auth = await asyncio.to_thread(auth_client, qbo)
    await asyncio.to_thread(auth.get_bearer_token, code, realm)
    assert auth.expires_in == 3600 and auth.x_refresh_token_expires_in == 100 * 86400
    with pytest.raises(AuthClientError) as replayed:
        await asyncio.to_thread(auth.get_bearer_token, code, realm)
    assert replayed.value.status_code == 400
    assert json.loads(replayed.value.content) == {"error": "invalid_grant"}

    # Every refresh rotates; the one just used still works within the grace and answers the
    # newest refresh token, then stops working.
    first = auth.refresh_token
    await asyncio.to_thread(auth.refresh)
    second = auth.refresh_token
    assert second != first
    racing = await asyncio.to_thread(auth_client, qbo)
    await asyncio.to_thread(racing.refresh, first)
    assert racing.refresh_token == second and racing.access_token != auth.access_token
    qbo.advance_clock(61)
    with pytest.raises(AuthClientError) as spent:
        await asyncio.to_thread(racing.refresh, first)
    assert json.loads(spent.value.content) == {"error": "invalid_grant"}
    assert qbo.stats.calls["oauth.refresh"] == 3

    # An hour on, the access token is refused; the newest refresh token still works.
    qb = books(qbo, auth)
    qbo.advance_clock(3600)
    with pytest.raises(AuthorizationException) as expired:
        await asyncio.to_thread(CompanyInfo.get, DEV_REALM_ID, qb=qb)
    assert expired.value.error_code == 401
    await asyncio.to_thread(auth.refresh)
    qb = books(qbo, auth)
    info = await asyncio.to_thread(CompanyInfo.get, DEV_REALM_ID, qb=qb)
    assert info.CompanyName == "Meshdev Venue LLC"

    # Revoking ends the authorization: the API and the refresh token both refuse.
    assert await asyncio.to_thread(auth.revoke) is True
    with pytest.raises(AuthorizationException):
        await asyncio.to_thread(CompanyInfo.get, DEV_REALM_ID, qb=qb)
    with pytest.raises(AuthClientError) as revoked:
        await asyncio.to_thread(auth.refresh)
    assert json.loads(revoked.value.content) == {"error": "invalid_grant"}


async def test_racing_refreshes_are_each_counted_and_end_on_one_newest_token(
    qbo: QuickBooksServer,
) -> None:
    """What the integration service's single-flight refresh must avoid, seen at the provider:
    ten replicas refreshing the same token at once make ten refresh calls (all answered within
    the grace, all with the same newest refresh token)."""
    auth = await connect(qbo)
    old = auth.refresh_token
    clients = [await asyncio.to_thread(auth_client, qbo) for _ in range(10)]
    await asyncio.gather(*(asyncio.to_thread(c.refresh, old) for c in clients))
    assert qbo.stats.calls["oauth.refresh"] == 10
    assert len({c.refresh_token for c in clients}) == 1
    assert len({c.access_token for c in clients}) == 10
    [authorization] = qbo.authorizations.values()
    assert authorization.latest_refresh == clients[0].refresh_token != old


async def test_refresh_tokens_expire_after_100_days(qbo: QuickBooksServer) -> None:
    auth = await connect(qbo)
    qbo.advance_clock(100 * 86400 + 1)
    with pytest.raises(AuthClientError) as expired:
        await asyncio.to_thread(auth.refresh)
    assert json.loads(expired.value.content) == {"error": "invalid_grant"}


async def test_another_company_is_forbidden(qbo: QuickBooksServer) -> None:
    qbo.add_company("9341450000000002", "Other venue")
    qb = books(qbo, await connect(qbo))
    qb.company_id = "9341450000000002"
    with pytest.raises(QuickbooksException) as forbidden:
        await asyncio.to_thread(CompanyInfo.get, "9341450000000002", qb=qb)
    assert "'403'" in forbidden.value.message and "3100" in forbidden.value.message


# -- records --------------------------------------------------------------------------------------


async def test_items_customers_and_receipts_are_checked_like_quickbooks(
    qbo: QuickBooksServer,
) -> None:
    qb = books(qbo, await connect(qbo))
    with pytest.raises(ValidationException) as no_account:
        await asyncio.to_thread(ticket_item("GA", account=None).save, qb=qb)
    assert no_account.value.error_code == 2020
    item = await asyncio.to_thread(ticket_item("Jazz night - GA").save, qb=qb)
    # python-quickbooks raises its base exception for codes above 4999 (6240, 5010, 6070).
    with pytest.raises(QuickbooksException) as duplicate:
        await asyncio.to_thread(ticket_item("jazz night - ga").save, qb=qb)
    assert duplicate.value.error_code == 6240

    customer = Customer()
    customer.DisplayName = "Ada Lovelace"
    customer = await asyncio.to_thread(customer.save, qb=qb)
    stale = Customer.from_json({"Id": customer.Id, "SyncToken": "7", "DisplayName": "Ada L."})
    with pytest.raises(QuickbooksException) as conflict:
        await asyncio.to_thread(stale.save, qb=qb)
    assert conflict.value.error_code == 5010
    customer.GivenName = "Ada"
    updated = await asyncio.to_thread(customer.save, qb=qb)
    assert updated.SyncToken == "1" and updated.DisplayName == "Ada Lovelace"

    wrong_total = receipt(SalesReceipt, item.Id, "50.00", doc="P-1", qty=2, unit="20.00")
    with pytest.raises(QuickbooksException) as mismatch:
        await asyncio.to_thread(wrong_total.save, qb=qb)
    assert mismatch.value.error_code == 6070
    sale = receipt(SalesReceipt, item.Id, "50.00", doc="P-1", qty=2, unit="25.00")
    sale.CustomerRef = updated.to_ref()
    saved = await asyncio.to_thread(sale.save, qb=qb, request_id="pay-1")
    assert Decimal(str(saved.TotalAmt)) == Decimal("50.00")

    refund = receipt(RefundReceipt, item.Id, "25.00", doc="R-1")
    with pytest.raises(ValidationException) as no_deposit:
        await asyncio.to_thread(refund.save, qb=qb)
    assert no_deposit.value.error_code == 2020
    refund.DepositToAccountRef = ref("4")
    await asyncio.to_thread(refund.save, qb=qb, request_id="refund-1")
    assert qbo.receipt_refs("RefundReceipt")["R-1"] == 1

    bad_ref = receipt(SalesReceipt, "999", "10.00", doc="P-2")
    with pytest.raises(ValidationException) as unknown_item:
        await asyncio.to_thread(bad_ref.save, qb=qb)
    assert unknown_item.value.error_code == 2500


async def test_request_id_replays_and_duplicates_are_countable(qbo: QuickBooksServer) -> None:
    qb = books(qbo, await connect(qbo))
    item = await asyncio.to_thread(ticket_item("GA").save, qb=qb)
    first = await asyncio.to_thread(
        receipt(SalesReceipt, item.Id, "25.00", doc="P-7").save, qb=qb, request_id="pay-7"
    )
    again = await asyncio.to_thread(
        receipt(SalesReceipt, item.Id, "25.00", doc="P-7").save, qb=qb, request_id="pay-7"
    )
    assert again.Id == first.Id
    assert qbo.receipt_refs()["P-7"] == 1 and qbo.duplicates()["SalesReceipt"] == {}
    # Without a request id a retry is a second receipt: the count shows it.
    await asyncio.to_thread(receipt(SalesReceipt, item.Id, "25.00", doc="P-7").save, qb=qb)
    assert qbo.duplicates()["SalesReceipt"] == {"P-7": 2, "tickettoken payment P-7": 2}


async def test_query_language_pages_counts_and_filters(qbo: QuickBooksServer) -> None:
    qb = books(qbo, await connect(qbo))
    people = []
    for n in range(25):
        person = Customer()
        person.DisplayName = f"Buyer {n:02d}"
        person.CompanyName = "O'Brien & Co" if n % 5 == 0 else "Other"
        people.append(person)
    created = await asyncio.to_thread(batch_create, people[:20], qb=qb)
    assert len(created.successes) == 20 and not created.faults
    await asyncio.to_thread(batch_create, people[20:], qb=qb)

    assert await asyncio.to_thread(Customer.count, qb=qb) == 25
    pages = []
    for start in (1, 11, 21):
        page = await asyncio.to_thread(
            Customer.where,
            "",
            order_by="DisplayName DESC",
            start_position=start,
            max_results=10,
            qb=qb,
        )
        pages.append([c.DisplayName for c in page])
    assert [len(p) for p in pages] == [10, 10, 5]
    assert pages[0][0] == "Buyer 24" and pages[2][-1] == "Buyer 00"
    obriens = await asyncio.to_thread(Customer.filter, CompanyName="O'Brien & Co", qb=qb)
    assert sorted(c.DisplayName for c in obriens) == [f"Buyer {n:02d}" for n in range(0, 25, 5)]
    chosen = await asyncio.to_thread(
        Customer.choose, ["Buyer 03", "Buyer 04"], "DisplayName", qb=qb
    )
    assert len(chosen) == 2
    liked = await asyncio.to_thread(Customer.where, "DisplayName LIKE 'Buyer 1%'", qb=qb)
    assert len(liked) == 10
    with pytest.raises(ValidationException):
        await asyncio.to_thread(Customer.query, "SELECT * FROM Customer WHERE", qb=qb)

    query = parse_query(
        "select *, Sku from Item where Active = true and Name in ('a', 'b') orderby Name "
        "startposition 3 maxresults 50"
    )
    assert (query.entity, query.start, query.max_results, query.order_by) == ("Item", 3, 50, "Name")


async def test_batch_limits_and_per_item_faults(qbo: QuickBooksServer) -> None:
    qb = books(qbo, await connect(qbo))
    items = [ticket_item(f"Tier {n}") for n in range(30)]
    items[7] = ticket_item("No account", account=None)
    result = await asyncio.to_thread(batch_create, items, qb=qb)
    assert len(result.successes) == 29 and len(result.faults) == 1
    over = {"BatchItemRequest": [{"bId": str(n), "Query": "select * from Item"} for n in range(31)]}
    with pytest.raises(QuickbooksException):
        await asyncio.to_thread(qb.batch_operation, json.dumps(over))


async def test_change_data_capture_reports_changes_and_deletes(qbo: QuickBooksServer) -> None:
    qb = books(qbo, await connect(qbo))
    item = await asyncio.to_thread(ticket_item("Early").save, qb=qb)
    sale = await asyncio.to_thread(receipt(SalesReceipt, item.Id, "5.00", doc="C-1").save, qb=qb)
    qbo.advance_clock(10)
    since = qbo.clock.now() - 1
    mark = __import__("datetime").datetime.fromtimestamp(since, __import__("datetime").UTC)
    later = await asyncio.to_thread(ticket_item("Late").save, qb=qb)
    await asyncio.to_thread(sale.delete, qb=qb)
    changes = await asyncio.to_thread(
        change_data_capture, [Item, SalesReceipt], mark.strftime("%Y-%m-%dT%H:%M:%S"), qb=qb
    )
    assert [i.Id for i in changes.Item] == [later.Id]
    [deleted] = changes.SalesReceipt
    assert deleted.Id == sale.Id and deleted.status == "Deleted"
    assert qbo.receipt_refs()["C-1"] == 0


# -- limits and faults ----------------------------------------------------------------------------


async def test_429_beyond_the_minute_and_the_concurrency_limit(qbo: QuickBooksServer) -> None:
    auth = await connect(qbo)
    headers = {"Authorization": f"Bearer {auth.access_token}", "Accept": "application/json"}
    url = f"/v3/company/{DEV_REALM_ID}/companyinfo/{DEV_REALM_ID}?minorversion=75"
    qbo.per_minute = 5
    async with httpx.AsyncClient(base_url=qbo.url, headers=headers) as http:
        statuses = [(await http.get(url)).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        throttled = await http.get(url)
        assert throttled.json()["fault"]["error"][0]["code"] == "3001"
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert qbo.stats.rate_limited == 2

        qbo.per_minute = None
        qbo.in_flight.cap = 2
        qbo.faults.latency_s = 0.3
        answers = await asyncio.gather(*(http.get(url) for _ in range(3)))
        assert sorted(a.status_code for a in answers) == [200, 200, 429]
        assert qbo.stats.concurrency_limited == 1


async def test_scripted_5xx_reaches_the_sdk_as_a_system_fault(qbo: QuickBooksServer) -> None:
    qb = books(qbo, await connect(qbo))
    qbo.fail_next(1, 503)
    with pytest.raises(SevereException) as failed:
        await asyncio.to_thread(CompanyInfo.get, DEV_REALM_ID, qb=qb)
    assert failed.value.error_code == 10000
    assert (await asyncio.to_thread(CompanyInfo.get, DEV_REALM_ID, qb=qb)).CompanyName


# -- webhooks -------------------------------------------------------------------------------------


async def test_webhooks_signed_with_the_verifier_token_in_both_formats(
    qbo: QuickBooksServer, hooks: WebhookReceiver
) -> None:
    qbo.webhook_url = hooks.url + "/qbo"
    qb = books(qbo, await connect(qbo))
    customer = Customer()
    customer.DisplayName = "Grace"
    created = await asyncio.to_thread(customer.save, qb=qb)
    [hook] = await hooks.wait("/qbo", 1)
    assert qb.validate_webhook_signature(
        hook.text, hook.headers[SIGNATURE_HEADER], DEV_VERIFIER_TOKEN
    )
    [event] = json.loads(hook.body)
    assert event["type"] == "qbo.customer.created.v1"
    assert (event["intuitentityid"], event["intuitaccountid"]) == (created.Id, DEV_REALM_ID)

    again = await qbo.resend(event["id"])
    assert again.body == hook.body
    forged = await qbo.emit([("Customer", created.Id, "Update")], forge=True)
    assert not qb.validate_webhook_signature(
        forged.body.decode(), forged.headers[SIGNATURE_HEADER], DEV_VERIFIER_TOKEN
    )

    qbo.webhook_format = "legacy"
    created.GivenName = "Grace"
    await asyncio.to_thread(created.save, qb=qb)
    legacy = (await hooks.wait("/qbo", 4))[-1]
    assert qb.validate_webhook_signature(
        legacy.text, legacy.headers[SIGNATURE_HEADER], DEV_VERIFIER_TOKEN
    )
    [notification] = json.loads(legacy.body)["eventNotifications"]
    assert notification["realmId"] == DEV_REALM_ID
    assert notification["dataChangeEvent"]["entities"][0]["operation"] == "Update"


# -- as a process ---------------------------------------------------------------------------------


async def test_quickbooks_standin_process(tmp_path: Path) -> None:
    with QuickBooksStandIn(tmp_path) as server:
        code = await asyncio.to_thread(server.authorize, redirect_uri=REDIRECT)
        auth = await asyncio.to_thread(auth_client, server)
        await asyncio.to_thread(auth.get_bearer_token, code, DEV_REALM_ID)
        qb = books(server, auth)
        item = await asyncio.to_thread(ticket_item("GA").save, qb=qb)
        await asyncio.to_thread(
            receipt(SalesReceipt, item.Id, "12.00", doc="X-1").save, qb=qb, request_id="x-1"
        )
        refs = await asyncio.to_thread(server.refs)
        assert refs["SalesReceipt"]["X-1"] == 1
        await asyncio.to_thread(server.advance_clock, 3601)
        with pytest.raises(AuthorizationException):
            await asyncio.to_thread(CompanyInfo.get, DEV_REALM_ID, qb=qb)
        await asyncio.to_thread(auth.refresh)
        stats = await asyncio.to_thread(server.stats)
        assert stats["calls"]["oauth.refresh"] == 1
        grants = await asyncio.to_thread(server.grants)
        assert grants["authorizations"][0]["latest_refresh_token"] == auth.refresh_token
