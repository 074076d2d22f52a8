"""The Mailchimp members writer (sync/writers/mailchimp.py) against the Mailchimp stand-in over
HTTP, through the service's token keeper and guard: consenting buyers subscribed by batch
subscribe, a resent batch updating the same members (nothing twice), an address Mailchimp
refuses failing alone, an existing subscriber never unsubscribed, and archiving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import OutRecord
from integration_service.sync.writers import mailchimp as mcw
from meshdev.standins.mailchimp import MailchimpServer
from tests.integration.integration.support import Client
from tests.integration.integration.writer_support import Contexts, mapped, writer_contexts
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _buyer(n: int, consent: bool = True, **extra: Any) -> OutRecord:
    record = {
        "id": f"u{n}",
        "email": f"Buyer{n}@Example.com",
        "given_name": f"Buyer {n}",
        "marketing_consent": consent,
        **extra,
    }
    return mapped(Provider.MAILCHIMP, EntityType.CUSTOMER, record)


@pytest.fixture
async def contexts(client: Client) -> AsyncIterator[Contexts]:
    async with writer_contexts(client, pb.PROVIDER_MAILCHIMP) as made:
        yield made


async def test_members_are_subscribed_once_and_a_refused_address_fails_alone(
    contexts: Contexts, mailchimp: MailchimpServer
) -> None:
    ctx = contexts(EntityType.CUSTOMER)
    batch = [_buyer(n) for n in range(5)]
    bad = _buyer(9)
    batch.append(
        OutRecord(bad.internal_id, {**bad.fields, "email_address": "not-an-address"}, None, "v")
    )
    results = await mcw.MEMBERS.write(ctx, batch)
    assert [r.error_code is None for r in results] == [True] * 5 + [False]
    assert results[0].external_id == mcw.subscriber_hash("buyer0@example.com")
    assert results[5].error_code is not None and results[5].error_code.startswith("mailchimp_")

    again = await mcw.MEMBERS.write(ctx, batch[:5])
    assert [r.external_id for r in again] == [r.external_id for r in results[:5]]
    members = [m for m in mailchimp.members() if m["status"] != "archived"]
    assert sorted(m["email_address"] for m in members) == [
        f"buyer{n}@example.com" for n in range(5)
    ]
    assert {m["status"] for m in members} == {"subscribed"}
    assert members[0]["merge_fields"]["FNAME"].startswith("Buyer")


async def test_a_later_record_without_consent_never_unsubscribes(
    contexts: Contexts, mailchimp: MailchimpServer
) -> None:
    ctx = contexts(EntityType.CUSTOMER)
    await mcw.MEMBERS.write(ctx, [_buyer(1)])
    [later] = await mcw.MEMBERS.write(ctx, [_buyer(1, consent=False, family_name="Lovelace")])
    assert later.error_code is None
    [member] = mailchimp.members()
    assert member["status"] == "subscribed" and member["merge_fields"]["LNAME"] == "Lovelace"
    [new] = await mcw.MEMBERS.write(ctx, [_buyer(2, consent=False)])
    assert new.error_code is None
    statuses = {m["email_address"]: m["status"] for m in mailchimp.members()}
    assert statuses["buyer2@example.com"] == "transactional"

    [archived] = await mcw.MEMBERS.delete(ctx, [mcw.subscriber_hash("buyer1@example.com")])
    [gone] = await mcw.MEMBERS.delete(ctx, [mcw.subscriber_hash("nobody@example.com")])
    assert archived.error_code is None and gone.error_code is None
    assert {m["email_address"] for m in mailchimp.members() if m["status"] != "archived"} == {
        "buyer2@example.com"
    }
