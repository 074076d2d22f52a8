"""The purchase journey across the mesh: paid → minted → notified, each exactly once.

payment, nft and notify run in-process as real servers on port 0 against the session's Postgres
and Redis (each in its own schema), with their event relays on and pointed at each other's gRPC
ports; payment talks to localstripe (behind the Stripe idempotency stand-in), nft mints on its
local LiteSVM chain, notify sends through the dev kit's SMTP sink. The tests drive the journey
through the public RPCs only (CreatePayment, RefundPayment) and check the outcome where a buyer
would: tickets on chain (GetTicketNft, VerifyOwnership) and mail in the sink. Every check of
"nothing more" is made after the relays have delivered (outbox rows marked delivered): the
consumers' answers are synchronous, so nothing can still be on its way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import pytest_asyncio

from meshdev.embedded import LocalStripe
from meshdev.standins.smtp import KeptMessage, SmtpSink
from meshdev.testing.servers import TestTokens, channel_for, running_app
from meshkit.db import Database
from meshkit.outbox import list_dead_letters
from meshkit.server import App
from nft_service.app import DEFINITION as NFT
from notify_service.app import DEFINITION as NOTIFY
from payment_service.app import DEFINITION as PAYMENT
from tests.payment.integration.support import (
    STRIPE_KEY,
    WEBHOOK_SECRET,
    add_venue,
    register_webhook,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

VENUE = "venue-journey"
EVENT_NAME = "The Band: Fall Tour"
DECLINE_AT_CHARGE = "4000000000000341"
WAIT_S = 60.0

# Relays and workers that poll often and retry soon, so a journey takes about a second.
RELAY = {
    "relay_poll_s": 0.02,
    "relay_backoff_base_s": 0.05,
    "relay_backoff_max_s": 0.5,
    "relay_max_attempts": 60,
}


@dataclass
class Mesh:
    payment: App
    nft: App
    notify: App
    smtp: SmtpSink
    localstripe: str
    tokens: TestTokens
    pay: payment_pb2_grpc.PaymentServiceStub
    mint: nft_pb2_grpc.NftServiceStub
    tell: notify_pb2_grpc.NotifyServiceStub

    def md(self, aud: str, sub: str = "admin-1", role: str = "admin") -> Metadata:
        return self.tokens.metadata(self.tokens.user(sub, [role], aud=f"tickettoken.{aud}"))

    async def payment_method(self, number: str) -> str:
        async with httpx.AsyncClient(
            base_url=self.localstripe, auth=(STRIPE_KEY, ""), timeout=10
        ) as http:
            response = await http.post(
                "/v1/payment_methods",
                data={
                    "type": "card",
                    "card[number]": number,
                    "card[exp_month]": "12",
                    "card[exp_year]": "2030",
                    "card[cvc]": "123",
                },
            )
            response.raise_for_status()
            return str(response.json()["id"])

    async def buy(
        self,
        *,
        tickets: int = 2,
        contact: common_pb2.ContactInfo | None = None,
        event: payment_pb2.EventDetails | None = None,
        pm: str = "pm_card_visa",
    ) -> payment_pb2.Payment:
        buyer = f"buyer-{uuid.uuid4().hex[:8]}"
        request = payment_pb2.CreatePaymentRequest(
            idempotency_key=str(uuid.uuid4()),
            order_id=f"order-{uuid.uuid4().hex[:10]}",
            venue_id=VENUE,
            event_id="event-fall-tour",
            buyer_id=buyer,
            line_items=[
                payment_pb2.LineItem(
                    ticket_type_id="ga",
                    description="General Admission",
                    unit_price=common_pb2.Money(currency="USD", amount_minor=5_000),
                    quantity=tickets,
                )
            ],
            currency="USD",
            payment_method_id=pm,
            buyer_contact=contact if contact is not None else email_contact(),
            event=event if event is not None else event_details(),
        )
        reply = await self.pay.CreatePayment(
            request, metadata=self.md("payment", buyer, "buyer"), timeout=30
        )
        return reply.payment

    async def refund(
        self, payment_id: str, *, amount: int | None = None, tickets: tuple[str, ...] = ()
    ) -> payment_pb2.Refund:
        request = payment_pb2.RefundPaymentRequest(
            idempotency_key=str(uuid.uuid4()),
            payment_id=payment_id,
            reason=payment_pb2.REFUND_REASON_REQUESTED_BY_CUSTOMER,
            ticket_ids=list(tickets),
        )
        if amount is not None:
            request.amount.CopyFrom(common_pb2.Money(currency="USD", amount_minor=amount))
        reply = await self.pay.RefundPayment(request, metadata=self.md("payment"), timeout=30)
        return reply.refund

    async def ticket(self, ticket_id: str) -> nft_pb2.TicketNft:
        reply = await self.mint.GetTicketNft(
            nft_pb2.GetTicketNftRequest(ticket_id=ticket_id), metadata=self.md("nft")
        )
        return reply.nft

    async def ownership(self, ticket: nft_pb2.TicketNft) -> nft_pb2.VerifyOwnershipResponse:
        reply: nft_pb2.VerifyOwnershipResponse = await self.mint.VerifyOwnership(
            nft_pb2.VerifyOwnershipRequest(ticket_id=ticket.ticket_id, wallet=ticket.owner_wallet),
            metadata=self.md("nft"),
        )
        return reply

    async def notifications(self, dedup_key: str) -> list[notify_pb2.Notification]:
        reply = await self.tell.ListNotifications(
            notify_pb2.ListNotificationsRequest(dedup_key=dedup_key), metadata=self.md("notify")
        )
        return list(reply.notifications)

    def mail_to(self, address: str) -> list[KeptMessage]:
        return [m for m in self.smtp.messages() if address in m.rcpt_tos]


def email_contact() -> common_pb2.ContactInfo:
    return common_pb2.ContactInfo(
        name="Ada Lovelace",
        email=f"ada-{uuid.uuid4().hex[:8]}@example.com",
        locale="en-US",
        time_zone="America/Chicago",
    )


def event_details() -> payment_pb2.EventDetails:
    details = payment_pb2.EventDetails(event_name=EVENT_NAME, venue_name="Ryman Auditorium")
    details.starts_at.FromDatetime(datetime(2026, 10, 2, 1, 0, tzinfo=UTC))
    return details


def ticket_ids(payment: payment_pb2.Payment) -> list[str]:
    return [t for line in payment.line_items for t in line.ticket_ids]


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `check` until it returns a value (not None); fail naming `what` after WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        found = await check()
        if found is not None:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {WAIT_S:g}s: {what}")
        await asyncio.sleep(0.05)


def db(app: App) -> Database:
    assert app.kit is not None
    return app.kit.db


async def undelivered(app: App) -> int:
    rows = await db(app).fetch("SELECT count(*) AS n FROM outbox WHERE delivered_at IS NULL")
    return int(rows[0]["n"])


async def settled(mesh: Mesh) -> None:
    """Wait until both relays have delivered everything staged so far."""

    async def check() -> bool | None:
        counts = (await undelivered(mesh.payment), await undelivered(mesh.nft))
        return True if counts == (0, 0) else None

    await eventually(check, "every outbox event delivered")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def mesh(
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    tokens: TestTokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Mesh]:
    work = tmp_path_factory.mktemp("journey")
    base = {"postgres_url": postgres_url, "redis_url": redis_url, "dev_dir": dev_dir}
    async with AsyncExitStack() as stack:
        localstripe = stack.enter_context(LocalStripe(work / "localstripe"))
        smtp = await stack.enter_async_context(SmtpSink(work / "mail"))
        notify = await stack.enter_async_context(
            running_app(
                NOTIFY,
                **base,
                notify_email_providers="smtp",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_timeout_s=5.0,
                notify_worker_poll_s=0.05,
                notify_retry_base_s=0.05,
                notify_retry_max_s=0.3,
            )
        )
        targets = {"notify_grpc_target": f"127.0.0.1:{notify.grpc_port}"}
        nft = await stack.enter_async_context(
            running_app(
                NFT,
                **base,
                **targets,
                **RELAY,
                solana_local_state_file=work / "chain.jsonl",
                nft_worker_poll_s=0.05,
                nft_retry_base_s=0.02,
                nft_retry_max_s=0.2,
                nft_wallet_check_interval_s=3600.0,
            )
        )
        targets["nft_grpc_target"] = f"127.0.0.1:{nft.grpc_port}"
        payment = await stack.enter_async_context(
            running_app(
                PAYMENT,
                **base,
                **targets,
                **RELAY,
                stripe_secret_key=STRIPE_KEY,
                stripe_webhook_secret=WEBHOOK_SECRET,
                stripe_api_base=localstripe.url,
                reconcile_interval_s=0,
                funds_hold_s=0,
                venue_tier_cache_s=0,
                refund_rate_limit_per_minute=1000,
            )
        )
        await register_webhook(localstripe.url, payment.http_port)
        await add_venue(payment, VENUE)
        channels = [
            await stack.enter_async_context(channel_for(app)) for app in (payment, nft, notify)
        ]
        yield Mesh(
            payment=payment,
            nft=nft,
            notify=notify,
            smtp=smtp,
            localstripe=localstripe.url,
            tokens=tokens,
            pay=payment_pb2_grpc.PaymentServiceStub(channels[0]),
            mint=nft_pb2_grpc.NftServiceStub(channels[1]),
            tell=notify_pb2_grpc.NotifyServiceStub(channels[2]),
        )


async def minted_and_confirmed(
    mesh: Mesh, payment: payment_pb2.Payment, address: str
) -> tuple[list[nft_pb2.TicketNft], list[KeptMessage]]:
    """Wait until every ticket of the payment is minted and one confirmation per ticket is in
    the sink; return the tickets and the confirmations."""
    ids = ticket_ids(payment)

    async def tickets() -> list[nft_pb2.TicketNft] | None:
        try:
            found = [await mesh.ticket(t) for t in ids]
        except grpc.aio.AioRpcError as err:
            if err.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise
        active = all(t.status == nft_pb2.TICKET_NFT_STATUS_ACTIVE for t in found)
        return found if active else None

    minted = await eventually(tickets, "every ticket minted")

    async def mail() -> list[KeptMessage] | None:
        kept = mesh.mail_to(address)
        return kept if len(kept) >= len(ids) else None

    confirmations = await eventually(mail, "a confirmation email per ticket")
    return minted, confirmations


# -- the journeys --------------------------------------------------------------------------------


async def test_a_purchase_is_minted_on_chain_and_confirmed_once_per_ticket(mesh: Mesh) -> None:
    contact = email_contact()
    payment = await mesh.buy(tickets=2, contact=contact)
    assert payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
    minted, confirmations = await minted_and_confirmed(mesh, payment, contact.email)
    await settled(mesh)

    for ticket in minted:
        assert ticket.custodial and ticket.owner_wallet  # no wallet in the contact: custodial
        assert ticket.event_name == EVENT_NAME and ticket.payment_id == payment.id
        verified = await mesh.ownership(ticket)
        assert verified.owned and verified.status == nft_pb2.OWNERSHIP_STATUS_OWNED
        assert verified.holder_wallet == ticket.owner_wallet
    # Exactly one confirmation per ticket, each with its ticket's mint address and links.
    assert len(mesh.mail_to(contact.email)) == 2
    by_mint = {}
    for message in confirmations:
        assert message.subject == f"Your ticket for {EVENT_NAME}"
        text = message.text or ""
        [ticket] = [t for t in minted if t.mint_address in text]
        by_mint[ticket.mint_address] = text
        assert f"https://explorer.solana.com/address/{ticket.mint_address}?cluster=" in text
        assert ticket.metadata_uri in text
        assert ticket.ticket_id in text
        assert "Thu 1 Oct 2026, 20:00 CDT" in text  # the buyer's time zone
    assert sorted(by_mint) == sorted(t.mint_address for t in minted)
    for ticket in minted:
        [sent] = await mesh.notifications(f"ticket:{ticket.ticket_id}:confirmation")
        assert sent.priority == notify_pb2.NOTIFICATION_PRIORITY_HIGH


async def test_every_event_delivered_twice_still_mints_and_mails_once(mesh: Mesh) -> None:
    contact = email_contact()
    payment = await mesh.buy(tickets=2, contact=contact)
    minted, _ = await minted_and_confirmed(mesh, payment, contact.email)
    await settled(mesh)
    before = {t.ticket_id: t.mint_signature for t in minted}
    job = (
        await mesh.mint.GetMintJob(
            nft_pb2.GetMintJobRequest(payment_id=payment.id), metadata=mesh.md("nft")
        )
    ).job

    # Every event this purchase caused is delivered again, as after a relay that died between
    # its calls and its commit.
    redelivered = 0
    for app, key in ((mesh.payment, [payment.id]), (mesh.nft, list(before))):
        tag = await db(app).execute(
            "UPDATE outbox SET delivered_at = NULL, available_at = now() WHERE key = ANY($1)", key
        )
        redelivered += int(tag.rsplit(" ", 1)[-1])
    assert redelivered == 3  # PaymentSucceeded, two TicketMinted
    await settled(mesh)

    again = [await mesh.ticket(t) for t in before]
    assert {t.ticket_id: t.mint_signature for t in again} == before  # not minted again
    replay = (
        await mesh.mint.GetMintJob(
            nft_pb2.GetMintJobRequest(payment_id=payment.id), metadata=mesh.md("nft")
        )
    ).job
    assert replay.id == job.id
    for ticket in again:
        assert (await mesh.ownership(ticket)).owned
        assert len(await mesh.notifications(f"ticket:{ticket.ticket_id}:confirmation")) == 1
    assert len(mesh.mail_to(contact.email)) == 2


async def test_a_failed_payment_sends_one_payment_failed_email(mesh: Mesh) -> None:
    contact = email_contact()
    pm = await mesh.payment_method(DECLINE_AT_CHARGE)
    payment = await mesh.buy(tickets=1, contact=contact, pm=pm)
    assert payment.status == payment_pb2.PAYMENT_STATUS_FAILED

    async def mail() -> list[KeptMessage] | None:
        return mesh.mail_to(contact.email) or None

    [message] = await eventually(mail, "the payment-failed email")
    await settled(mesh)
    assert message.subject == f"Your payment for {EVENT_NAME} did not go through"
    assert "$" in (message.text or "") and payment.failure_message in (message.text or "")
    assert len(mesh.mail_to(contact.email)) == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.mint.GetMintJob(
            nft_pb2.GetMintJobRequest(payment_id=payment.id), metadata=mesh.md("nft")
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND  # nothing to mint


async def test_refunds_after_the_mint_revoke_the_tickets_and_tell_the_buyer(mesh: Mesh) -> None:
    contact = email_contact()
    payment = await mesh.buy(tickets=2, contact=contact)
    await minted_and_confirmed(mesh, payment, contact.email)
    first, second = ticket_ids(payment)

    # One ticket back, then the rest of the money: the second refund names no ticket, and
    # being full, cancels every ticket left.
    await mesh.refund(payment.id, amount=5_000, tickets=(first,))
    await mesh.refund(payment.id)

    async def revoked() -> list[nft_pb2.TicketNft] | None:
        found = [await mesh.ticket(t) for t in (first, second)]
        done = all(t.status == nft_pb2.TICKET_NFT_STATUS_REVOKED for t in found)
        return found if done else None

    tickets = await eventually(revoked, "both tickets revoked")
    for ticket in tickets:
        assert ticket.revoke_reason == nft_pb2.REVOKE_REASON_REFUND
        verified = await mesh.ownership(ticket)
        assert not verified.owned and verified.status == nft_pb2.OWNERSHIP_STATUS_REVOKED

    async def refund_mail() -> list[KeptMessage] | None:
        kept = [
            m for m in mesh.mail_to(contact.email) if m.subject == f"Your refund for {EVENT_NAME}"
        ]
        return kept if len(kept) >= 2 else None

    refunds = await eventually(refund_mail, "two refund emails")
    await settled(mesh)
    assert len(refunds) == 2
    assert sorted("$50.00" in (m.text or "") for m in refunds) == [False, True]
    assert len(mesh.mail_to(contact.email)) == 4  # two confirmations, two refunds


async def test_a_buyer_without_email_or_phone_gets_the_tickets_and_no_message(mesh: Mesh) -> None:
    payment = await mesh.buy(tickets=1, contact=common_pb2.ContactInfo(name="Nobody"))
    [ticket_id] = ticket_ids(payment)

    async def minted() -> nft_pb2.TicketNft | None:
        try:
            ticket = await mesh.ticket(ticket_id)
        except grpc.aio.AioRpcError:
            return None
        return ticket if ticket.status == nft_pb2.TICKET_NFT_STATUS_ACTIVE else None

    await eventually(minted, "the ticket minted")
    await settled(mesh)  # TicketMinted delivered: nothing to send is not an error
    assert await mesh.notifications(f"ticket:{ticket_id}:confirmation") == []
    assert all(d.key != ticket_id for d in await list_dead_letters(db(mesh.nft)))


async def test_a_consumers_refusal_dead_letters_the_event_at_once_with_the_reason(
    mesh: Mesh,
) -> None:
    # An order without the event's facts: nft refuses to mint a ticket it cannot describe.
    payment = await mesh.buy(tickets=1, event=payment_pb2.EventDetails())
    assert payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED

    async def dead() -> Any:
        letters = [d for d in await list_dead_letters(db(mesh.payment)) if d.key == payment.id]
        return letters or None

    [letter] = await eventually(dead, "PaymentSucceeded dead-lettered")
    assert letter.attempts == 1
    assert letter.last_error is not None
    assert letter.last_error.startswith("undeliverable: nft.mint_tickets: INVALID_ARGUMENT")
    assert "event_name" in letter.last_error
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.mint.GetMintJob(
            nft_pb2.GetMintJobRequest(payment_id=payment.id), metadata=mesh.md("nft")
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_mint_that_fails_for_good_tells_the_buyer_the_ticket_is_delayed(
    mesh: Mesh, app_factory: Any, tmp_path: Path
) -> None:
    # An nft whose minting wallet holds nothing on its chain: the mint fails for good
    # (insufficient funds: it waits for an operator), and MintFailed reaches notify.
    broke = await app_factory(
        NFT,
        **RELAY,
        notify_grpc_target=f"127.0.0.1:{mesh.notify.grpc_port}",
        solana_local_state_file=tmp_path / "empty-chain.jsonl",
        solana_dev_airdrop_lamports=0,
        nft_worker_poll_s=0.05,
        nft_wallet_check_interval_s=3600.0,
    )
    contact = email_contact()
    ticket = nft_pb2.TicketToMint(
        ticket_id=f"t-{uuid.uuid4().hex[:8]}",
        event_name=EVENT_NAME,
        venue_name="Ryman Auditorium",
        ticket_type="General Admission",
    )
    ticket.event_starts_at.FromDatetime(datetime(2026, 10, 2, 1, 0, tzinfo=UTC))
    request = nft_pb2.MintTicketsRequest(
        idempotency_key=str(uuid.uuid4()),
        payment_id=f"pay-{uuid.uuid4().hex[:8]}",
        order_id="order-1",
        event_id="event-fall-tour",
        venue_id=VENUE,
        buyer_id="buyer-1",
        tickets=[ticket],
        buyer_contact=contact,
    )
    async with channel_for(broke) as channel:
        await nft_pb2_grpc.NftServiceStub(channel).MintTickets(
            request,
            metadata=mesh.tokens.metadata(mesh.tokens.service("payment", aud="tickettoken.nft")),
        )

    async def mail() -> list[KeptMessage] | None:
        return mesh.mail_to(contact.email) or None

    [message] = await eventually(mail, "the ticket-delayed email")
    assert message.subject == f"Your ticket for {EVENT_NAME} is on its way"
    assert ticket.ticket_id in (message.text or "")
    assert len(await mesh.notifications(f"ticket:{ticket.ticket_id}:delayed")) == 1


async def test_a_refund_before_the_mint_cancels_that_ticket_and_mints_the_rest(
    mesh: Mesh, app_factory: Any, tmp_path: Path
) -> None:
    # An nft whose minters are not running yet, and a payment service that delivers to it:
    # the refund of one ticket reaches nft while both tickets wait in its queue.
    schema = f"t_{uuid.uuid4().hex[:12]}"
    nft_settings = {
        **RELAY,
        "db_schema": schema,
        "notify_grpc_target": f"127.0.0.1:{mesh.notify.grpc_port}",
        "solana_local_state_file": tmp_path / "chain.jsonl",
        "nft_worker_poll_s": 0.05,
        "nft_wallet_check_interval_s": 3600.0,
    }
    idle = await app_factory(NFT, **nft_settings, nft_mint_workers=0)
    payment_app = await app_factory(
        PAYMENT,
        **RELAY,
        nft_grpc_target=f"127.0.0.1:{idle.grpc_port}",
        notify_grpc_target=f"127.0.0.1:{mesh.notify.grpc_port}",
        stripe_secret_key=STRIPE_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=mesh.localstripe,
        reconcile_interval_s=0,
        funds_hold_s=0,
        refund_rate_limit_per_minute=1000,
    )
    await add_venue(payment_app, VENUE)
    contact = email_contact()
    async with channel_for(payment_app) as channel:
        shop = Mesh(**{**mesh.__dict__, "payment": payment_app, "nft": idle})
        shop.pay = payment_pb2_grpc.PaymentServiceStub(channel)
        payment = await shop.buy(tickets=2, contact=contact)
        refunded, kept = ticket_ids(payment)
        await settled(shop)  # MintTickets queued the job at the idle nft
        await shop.refund(payment.id, amount=5_000, tickets=(refunded,))
        await settled(shop)  # RevokeTicket answered: the ticket is cancelled before its mint

    # The minters start (a new process over the same database and chain).
    await idle.stop()
    minting = await app_factory(NFT, **nft_settings)
    async with channel_for(minting) as channel:
        shop = Mesh(**{**mesh.__dict__, "payment": payment_app, "nft": minting})
        shop.mint = nft_pb2_grpc.NftServiceStub(channel)

        async def minted() -> nft_pb2.TicketNft | None:
            ticket = await shop.ticket(kept)
            return ticket if ticket.status == nft_pb2.TICKET_NFT_STATUS_ACTIVE else None

        ticket = await eventually(minted, "the kept ticket minted")
        assert (await shop.ownership(ticket)).owned

        async def mail() -> list[KeptMessage] | None:
            kept_mail = mesh.mail_to(contact.email)
            return kept_mail if len(kept_mail) >= 2 else None

        messages = await eventually(mail, "a confirmation and a refund email")
        await settled(shop)
        gone = await shop.ticket(refunded)
        assert gone.status == nft_pb2.TICKET_NFT_STATUS_REVOKED
        assert gone.revoke_reason == nft_pb2.REVOKE_REASON_REFUND
        assert gone.mint_signature == "" and not gone.HasField("minted_at")  # never minted
        verified = await shop.ownership(gone)
        assert not verified.owned and verified.holder_wallet == ""
    subjects = sorted(m.subject or "" for m in messages)
    assert subjects == [f"Your refund for {EVENT_NAME}", f"Your ticket for {EVENT_NAME}"]
    [confirmation] = [m for m in messages if m.subject == f"Your ticket for {EVENT_NAME}"]
    assert ticket.mint_address in (confirmation.text or "")
    assert await shop.notifications(f"ticket:{refunded}:confirmation") == []
