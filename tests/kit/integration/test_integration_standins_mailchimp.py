"""The Mailchimp stand-in (meshdev.standins.mailchimp) driven through the official
`mailchimp-marketing` SDK, configured as the integration service will configure it (server
prefix from the OAuth metadata, `api_client.host = api_endpoint + "/3.0"`), and raw HTTP for
what the SDK has no call for (the OAuth code exchange and metadata, concurrency bursts). The SDK
is synchronous (requests): it runs in threads while the stand-in serves this event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import mailchimp_marketing
import pytest
from mailchimp_marketing.api_client import ApiClientError

from meshdev.embedded import MailchimpStandIn
from meshdev.standins.mailchimp import (
    DEV_API_KEY,
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    DEV_DC,
    DEV_LIST_ID,
    MailchimpServer,
    subscriber_hash,
)
from meshdev.testing.webhooks import WebhookReceiver

REDIRECT = "http://127.0.0.1:1/integration/oauth/callback"


@pytest.fixture
async def chimp() -> AsyncIterator[MailchimpServer]:
    async with MailchimpServer() as server:
        yield server


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


def sdk(config: dict[str, str], api_endpoint: str) -> Any:
    client = mailchimp_marketing.Client()
    client.set_config(config)
    client.api_client.host = api_endpoint + "/3.0"
    return client


def key_client(server: MailchimpServer | MailchimpStandIn, key: str = DEV_API_KEY) -> Any:
    return sdk({"api_key": key, "server": key.rpartition("-")[2]}, server.url)


async def oauth_connect(server: MailchimpServer) -> tuple[str, dict[str, Any]]:
    """The OAuth dance as the integration service does it: (access token, metadata)."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        consent = await http.get(
            "/oauth2/authorize",
            params={
                "response_type": "code",
                "client_id": DEV_CLIENT_ID,
                "redirect_uri": REDIRECT,
                "state": "st-9",
            },
        )
        assert consent.status_code == 302
        location = httpx.URL(consent.headers["location"])
        assert location.params["state"] == "st-9"
        form = {
            "grant_type": "authorization_code",
            "client_id": DEV_CLIENT_ID,
            "client_secret": DEV_CLIENT_SECRET,
            "redirect_uri": REDIRECT,
            "code": location.params["code"],
        }
        token = await http.post("/oauth2/token", data=form)
        assert token.status_code == 200
        body = token.json()
        assert body["expires_in"] == 0 and body["scope"] is None
        replay = await http.post("/oauth2/token", data=form)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        wrong = await http.post("/oauth2/token", data={**form, "client_secret": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        metadata = await http.get(
            "/oauth2/metadata", headers={"Authorization": f"OAuth {body['access_token']}"}
        )
        assert metadata.status_code == 200
        return body["access_token"], metadata.json()


# -- OAuth and auth -------------------------------------------------------------------------------


async def test_oauth_metadata_points_the_sdk_at_the_datacenter(chimp: MailchimpServer) -> None:
    token, metadata = await oauth_connect(chimp)
    assert metadata["dc"] == DEV_DC and metadata["api_endpoint"] == chimp.url
    client = sdk({"access_token": token, "server": metadata["dc"]}, metadata["api_endpoint"])
    assert await asyncio.to_thread(client.ping.get) == {"health_status": "Everything's Chimpy!"}

    # Tokens never expire; removing the app ends them.
    chimp.advance_clock(10 * 365 * 86400)
    assert await asyncio.to_thread(client.ping.get)
    assert chimp.revoke_token() == 1
    with pytest.raises(ApiClientError) as refused:
        await asyncio.to_thread(client.ping.get)
    assert refused.value.status_code == 401
    assert json.loads(refused.value.text)["title"] == "API Key Invalid"


async def test_api_keys_name_their_datacenter(chimp: MailchimpServer) -> None:
    assert await asyncio.to_thread(key_client(chimp).ping.get)
    wrong_dc = key_client(chimp, DEV_API_KEY.rpartition("-")[0] + "-us7")
    with pytest.raises(ApiClientError) as refused:
        await asyncio.to_thread(wrong_dc.ping.get)
    assert refused.value.status_code == 401
    assert chimp.stats.unauthorized == 1


# -- members --------------------------------------------------------------------------------------


async def test_put_upserts_by_subscriber_hash_and_add_refuses_a_known_member(
    chimp: MailchimpServer,
) -> None:
    client = key_client(chimp)
    email = "Ada@Example.test"
    body = {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "Ada"}}
    first = await asyncio.to_thread(
        client.lists.set_list_member, DEV_LIST_ID, subscriber_hash(email), body
    )
    again = await asyncio.to_thread(
        client.lists.set_list_member,
        DEV_LIST_ID,
        subscriber_hash(email),
        {**body, "merge_fields": {"LNAME": "Lovelace"}},
    )
    assert first["id"] == again["id"] == subscriber_hash("ada@example.test")
    assert again["merge_fields"] == {"FNAME": "Ada", "LNAME": "Lovelace"}
    assert len(chimp.members()) == 1 and chimp.member_writes[first["id"]] == 2

    with pytest.raises(ApiClientError) as mismatch:
        await asyncio.to_thread(
            client.lists.set_list_member, DEV_LIST_ID, subscriber_hash("other@example.test"), body
        )
    assert mismatch.value.status_code == 400
    with pytest.raises(ApiClientError) as exists:
        await asyncio.to_thread(
            client.lists.add_list_member,
            DEV_LIST_ID,
            {"email_address": email, "status": "subscribed"},
        )
    assert json.loads(exists.value.text)["title"] == "Member Exists"

    await asyncio.to_thread(client.lists.delete_list_member, DEV_LIST_ID, first["id"])
    fetched = await asyncio.to_thread(client.lists.get_list_member, DEV_LIST_ID, first["id"])
    assert fetched["status"] == "archived"


async def test_batch_subscribe_and_paging(chimp: MailchimpServer) -> None:
    client = key_client(chimp)
    members = [
        {"email_address": f"buyer{n:03d}@example.test", "status": "subscribed"} for n in range(250)
    ]
    created = await asyncio.to_thread(
        client.lists.batch_list_members, DEV_LIST_ID, {"members": members, "update_existing": False}
    )
    assert created["total_created"] == 250 and created["error_count"] == 0
    again = await asyncio.to_thread(
        client.lists.batch_list_members,
        DEV_LIST_ID,
        {"members": [*members[:10], {"email_address": "new@example.test", "status": "subscribed"}]},
    )
    assert again["total_created"] == 1 and again["error_count"] == 10
    assert again["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS"
    updated = await asyncio.to_thread(
        client.lists.batch_list_members,
        DEV_LIST_ID,
        {
            "members": [{**m, "merge_fields": {"FNAME": "B"}} for m in members[:5]],
            "update_existing": True,
        },
    )
    assert updated["total_updated"] == 5

    seen: list[str] = []
    for offset in range(0, 300, 100):
        page = await asyncio.to_thread(
            client.lists.get_list_members_info, DEV_LIST_ID, count=100, offset=offset
        )
        assert page["total_items"] == 251
        seen += [m["email_address"] for m in page["members"]]
    assert len(seen) == len(set(seen)) == 251

    with pytest.raises(ApiClientError) as too_many:
        await asyncio.to_thread(
            client.lists.batch_list_members,
            DEV_LIST_ID,
            {
                "members": [
                    {"email_address": f"x{n}@example.test", "status": "subscribed"}
                    for n in range(501)
                ]
            },
        )
    assert too_many.value.status_code == 400


# -- limits and faults ----------------------------------------------------------------------------


async def test_429_beyond_ten_connections_and_the_rate(chimp: MailchimpServer) -> None:
    chimp.faults.latency_s = 0.3
    auth = httpx.BasicAuth("anystring", DEV_API_KEY)
    async with httpx.AsyncClient(base_url=chimp.url, auth=auth) as http:
        answers = await asyncio.gather(*(http.get("/3.0/ping") for _ in range(14)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 10 + [429] * 4
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "10 simultaneous connections" in refused.json()["detail"]
    assert chimp.stats.concurrency_limited == 4

    chimp.faults.latency_s = 0.0
    chimp.limit.configure(0.01, burst=3)
    client = key_client(chimp)
    for _ in range(3):
        await asyncio.to_thread(client.ping.get)
    with pytest.raises(ApiClientError) as throttled:
        await asyncio.to_thread(client.ping.get)
    assert throttled.value.status_code == 429
    assert chimp.stats.rate_limited == 1


async def test_scripted_5xx(chimp: MailchimpServer) -> None:
    client = key_client(chimp)
    chimp.fail_next(1, 503)
    with pytest.raises(ApiClientError) as failed:
        await asyncio.to_thread(client.ping.get)
    assert failed.value.status_code == 503
    assert await asyncio.to_thread(client.ping.get)


# -- webhooks -------------------------------------------------------------------------------------


async def test_webhooks_are_validated_by_get_and_posted_unsigned_to_the_secret_url(
    chimp: MailchimpServer, hooks: WebhookReceiver
) -> None:
    client = key_client(chimp)
    hooks.statuses["/broken"] = 404
    with pytest.raises(ApiClientError) as refused:
        await asyncio.to_thread(
            client.lists.create_list_webhook, DEV_LIST_ID, {"url": hooks.url + "/broken"}
        )
    assert refused.value.status_code == 400

    url = hooks.url + "/webhooks/mailchimp?secret=s3cr3t-per-connection"
    webhook = await asyncio.to_thread(
        client.lists.create_list_webhook,
        DEV_LIST_ID,
        {
            "url": url,
            "events": {"subscribe": True, "unsubscribe": True, "profile": True},
            "sources": {"user": True, "admin": True, "api": True},
        },
    )
    [check] = hooks.at("/webhooks/mailchimp", "GET")
    assert check.url == url
    assert webhook["sources"]["api"] is True

    email = "grace@example.test"
    await asyncio.to_thread(
        client.lists.set_list_member,
        DEV_LIST_ID,
        subscriber_hash(email),
        {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "Grace"}},
    )
    [subscribed] = await hooks.wait("/webhooks/mailchimp", 1)
    assert subscribed.url == url and subscribed.headers["Content-Type"].startswith(
        "application/x-www-form-urlencoded"
    )
    form = subscribed.form
    assert (form["type"], form["data[email]"], form["data[list_id]"]) == (
        "subscribe",
        email,
        DEV_LIST_ID,
    )
    assert form["data[merges][FNAME]"] == "Grace"
    assert not any("signature" in h.lower() for h in subscribed.headers)

    [delivery] = await chimp.emit("unsubscribe", email)
    assert delivery.status == 200
    unsubscribed = hooks.at("/webhooks/mailchimp", "POST")[-1].form
    assert (unsubscribed["type"], unsubscribed["data[action]"]) == ("unsubscribe", "unsub")
    member = await asyncio.to_thread(
        client.lists.get_list_member, DEV_LIST_ID, subscriber_hash(email)
    )
    assert member["status"] == "unsubscribed"


# -- as a process ---------------------------------------------------------------------------------


async def test_mailchimp_standin_process(tmp_path: Path) -> None:
    with MailchimpStandIn(tmp_path) as server:
        client = key_client(server)
        assert await asyncio.to_thread(client.ping.get)
        email = "p@example.test"
        await asyncio.to_thread(
            client.lists.set_list_member,
            server.list_id,
            subscriber_hash(email),
            {"email_address": email, "status_if_new": "subscribed"},
        )
        state = await asyncio.to_thread(server.members)
        assert [m["email_address"] for m in state["members"]] == [email]
        assert state["writes"] == {subscriber_hash(email): 1}
        code = await asyncio.to_thread(server.authorize, redirect_uri=REDIRECT)
        async with httpx.AsyncClient(base_url=server.url) as http:
            token = await http.post(
                "/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": server.client_id,
                    "client_secret": server.client_secret,
                    "redirect_uri": REDIRECT,
                    "code": code,
                },
            )
        assert token.status_code == 200
