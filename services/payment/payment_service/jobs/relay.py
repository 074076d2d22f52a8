"""payment's event relay: what its events make nft and notify do (meshkit.routing).

  PaymentSucceeded → nft.MintTickets        one call: every ticket of the payment, one
                                            TicketToMint per ticket id, to the buyer's wallet
                                            (buyer_contact.wallet_address) or, when empty, the
                                            buyer's custodial wallet; buyer contact passed on
                                            (nft puts it in TicketMinted / MintFailed)
  PaymentRefunded  → nft.RevokeTicket       one call per ticket the refund cancels (a full
                                            refund lists every ticket), reason REFUND,
                                            reference = the refund id
                   → notify refund_issued   email to the buyer
                   → integration.RecordTransaction  (REFUND: the venue's books)
  PaymentSucceeded → integration.RecordTransaction  (SALE: the venue's books, and the buyer to
                                            its marketing tools when they consented)
  PaymentFailed    → notify payment_failed  email to the buyer
  PayoutCreated    → (no route: delivered as a no-op)

The integration routes exist when payment has an integration target configured
(INTEGRATION_GRPC_TARGET: `make run`, the k8s ConfigMap); a payment process without one relays
nothing to integration.

Idempotency keys (`Delivery.key`): uuid5 of (event id, route name, part) — MintTickets and the
messages one key per event, RevokeTicket one per (event, ticket). Messages also carry a business
dedup_key (`payment:<id>:payment_failed`, `refund:<id>:refund_issued`), so notify sends each at
most once even if the same change were announced by two events.

The requests are built by pure functions below (the same event always gives the same request).
A buyer without an email address gets no message (skipped: these templates have no SMS
version). Missing event facts are not invented for the NFT: nft refuses the mint
(INVALID_ARGUMENT) and the event is dead-lettered with the reason; messages fall back to the
event id for an unnamed event.
"""

from __future__ import annotations

from typing import Any

from meshkit.clients import MeshClients
from meshkit.notices import money_text, notification
from meshkit.routing import Delivery, Route, each
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2
from tickettoken.nft.v1 import nft_pb2
from tickettoken.notify.v1 import notify_pb2
from tickettoken.payment.v1 import events_pb2, payment_pb2

MINT = "nft.mint_tickets"
REVOKE = "nft.revoke_ticket"
PAYMENT_FAILED = "notify.payment_failed"
REFUND_ISSUED = "notify.refund_issued"
RECORD_SALE = "integration.record_sale"
RECORD_REFUND = "integration.record_refund"
FEES_LINE = "Fees and taxes"

TICKET_TYPE_MAX = 32  # TicketToMint.ticket_type
NOTE_MAX = 500  # RevokeTicketRequest.note


def _event_name(event_id: str, details: payment_pb2.EventDetails) -> str:
    return details.event_name or event_id


def mint_request(event: events_pb2.PaymentSucceeded, key: str) -> nft_pb2.MintTicketsRequest:
    """MintTickets for every ticket of the payment (one job per payment at nft)."""
    details = event.event
    tickets = []
    for line in event.tickets:
        ticket = nft_pb2.TicketToMint(
            ticket_id=line.ticket_id,
            owner_wallet=event.buyer_contact.wallet_address,
            event_name=details.event_name,
            venue_name=details.venue_name,
            section=line.section,
            row=line.row,
            seat=line.seat,
            ticket_type=(line.description or line.ticket_type_id)[:TICKET_TYPE_MAX],
            image_url=details.image_url,
        )
        if details.HasField("starts_at"):
            ticket.event_starts_at.CopyFrom(details.starts_at)
        tickets.append(ticket)
    return nft_pb2.MintTicketsRequest(
        idempotency_key=key,
        payment_id=event.payment_id,
        order_id=event.order_id,
        event_id=event.event_id,
        venue_id=event.venue_id,
        buyer_id=event.buyer_id,
        tickets=tickets,
        buyer_contact=event.buyer_contact,
    )


def revoke_request(
    event: events_pb2.PaymentRefunded, ticket_id: str, key: str
) -> nft_pb2.RevokeTicketRequest:
    return nft_pb2.RevokeTicketRequest(
        idempotency_key=key,
        ticket_id=ticket_id,
        reason=nft_pb2.REVOKE_REASON_REFUND,
        reference_id=event.refund_id,
        note=f"refund {event.refund_id} of payment {event.payment_id}"[:NOTE_MAX],
    )


def payment_failed_message(
    event: events_pb2.PaymentFailed, key: str
) -> notify_pb2.SendNotificationRequest | None:
    return notification(
        key=key,
        contact=event.buyer_contact,
        user_id=event.buyer_id,
        email_template="payment_failed",
        variables={
            "event_name": _event_name(event.event_id, event.event),
            "amount": money_text(event.total),
            "failure_message": event.failure_message or "The payment was declined.",
        },
        dedup_key=f"payment:{event.payment_id}:payment_failed",
        # The buyer is at the checkout now: not held back by quiet hours.
        priority=notify_pb2.NOTIFICATION_PRIORITY_HIGH,
        metadata={"payment_id": event.payment_id, "order_id": event.order_id},
    )


def refund_message(
    event: events_pb2.PaymentRefunded, key: str
) -> notify_pb2.SendNotificationRequest | None:
    variables = {
        "event_name": _event_name(event.event_id, event.event),
        "amount": money_text(event.amount),
    }
    if event.ticket_ids:
        variables["ticket_count"] = str(len(set(event.ticket_ids)))
    return notification(
        key=key,
        contact=event.buyer_contact,
        user_id=event.buyer_id,
        email_template="refund_issued",
        variables=variables,
        dedup_key=f"refund:{event.refund_id}:refund_issued",
        metadata={
            "payment_id": event.payment_id,
            "order_id": event.order_id,
            "refund_id": event.refund_id,
        },
    )


def sale_transaction(
    event: events_pb2.PaymentSucceeded, key: str
) -> integration_pb2.RecordTransactionRequest:
    """The sale for the venue's books: one line per ticket type and price (quantities summed,
    in cart order) and one line of the fees and taxes, so the lines add up to the total."""
    grouped: dict[tuple[str, str, str, int], int] = {}
    for t in event.tickets:
        line = (t.ticket_type_id, t.description, t.unit_price.currency, t.unit_price.amount_minor)
        grouped[line] = grouped.get(line, 0) + 1
    lines = [
        integration_pb2.TransactionLine(
            ticket_type_id=type_id,
            description=description,
            unit_price=common_pb2.Money(currency=currency, amount_minor=amount),
            quantity=quantity,
        )
        for (type_id, description, currency, amount), quantity in grouped.items()
    ]
    fees = event.total.amount_minor - sum(
        line.unit_price.amount_minor * line.quantity for line in lines
    )
    if fees > 0:
        lines.append(
            integration_pb2.TransactionLine(
                description=FEES_LINE,
                unit_price=common_pb2.Money(currency=event.total.currency, amount_minor=fees),
                quantity=1,
            )
        )
    request = integration_pb2.RecordTransactionRequest(
        idempotency_key=key,
        kind=integration_pb2.TRANSACTION_KIND_SALE,
        payment_id=event.payment_id,
        venue_id=event.venue_id,
        event_id=event.event_id,
        order_id=event.order_id,
        buyer_id=event.buyer_id,
        buyer_contact=common_pb2.ContactInfo(
            name=event.buyer_contact.name,
            email=event.buyer_contact.email,
            phone=event.buyer_contact.phone,
        ),
        marketing_consent=event.marketing_consent,
        lines=lines,
        amount=event.total,
        provider_reference=event.provider_payment_id,
        occurred_at=event.succeeded_at,
    )
    if fees > 0:
        request.fees.CopyFrom(common_pb2.Money(currency=event.total.currency, amount_minor=fees))
    return request


def refund_transaction(
    event: events_pb2.PaymentRefunded, key: str
) -> integration_pb2.RecordTransactionRequest:
    """The refund for the venue's books (an amount: the refund receipt has one line of it)."""
    return integration_pb2.RecordTransactionRequest(
        idempotency_key=key,
        kind=integration_pb2.TRANSACTION_KIND_REFUND,
        payment_id=event.payment_id,
        refund_id=event.refund_id,
        venue_id=event.venue_id,
        event_id=event.event_id,
        order_id=event.order_id,
        buyer_id=event.buyer_id,
        buyer_contact=common_pb2.ContactInfo(
            name=event.buyer_contact.name, email=event.buyer_contact.email
        ),
        amount=event.amount,
        provider_reference=event.provider_refund_id,
        occurred_at=event.refunded_at,
    )


class PaymentRelay:
    """The actions of payment's routes, calling nft and notify through the kit's mesh clients
    (service token `svc:payment`, request id, deadline `timeout_s` per call)."""

    def __init__(
        self, clients: MeshClients, *, timeout_s: float, to_integration: bool = False
    ) -> None:
        self._clients = clients
        self._nft = clients.nft
        self._notify = clients.notify
        self._timeout = timeout_s
        self._to_integration = to_integration

    def routes(self) -> list[Route[Any]]:
        routes: list[Route[Any]] = [
            Route(events_pb2.PaymentSucceeded, MINT, self.mint_tickets),
            Route(events_pb2.PaymentFailed, PAYMENT_FAILED, self.payment_failed),
            Route(events_pb2.PaymentRefunded, REVOKE, self.revoke_tickets),
            Route(events_pb2.PaymentRefunded, REFUND_ISSUED, self.refund_issued),
        ]
        if self._to_integration:
            routes += [
                Route(events_pb2.PaymentSucceeded, RECORD_SALE, self.record_sale),
                Route(events_pb2.PaymentRefunded, RECORD_REFUND, self.record_refund),
            ]
        return routes

    async def record_sale(self, event: events_pb2.PaymentSucceeded, delivery: Delivery) -> None:
        await self._clients.integration.RecordTransaction(
            sale_transaction(event, delivery.key()), timeout=self._timeout
        )

    async def record_refund(self, event: events_pb2.PaymentRefunded, delivery: Delivery) -> None:
        await self._clients.integration.RecordTransaction(
            refund_transaction(event, delivery.key()), timeout=self._timeout
        )

    async def mint_tickets(self, event: events_pb2.PaymentSucceeded, delivery: Delivery) -> None:
        if not event.tickets:
            delivery.skip("the payment has no tickets")
            return
        await self._nft.MintTickets(mint_request(event, delivery.key()), timeout=self._timeout)

    async def revoke_tickets(self, event: events_pb2.PaymentRefunded, delivery: Delivery) -> None:
        tickets = list(dict.fromkeys(event.ticket_ids))
        if not tickets:
            delivery.skip("the refund cancels no ticket")
            return

        async def revoke(ticket_id: str) -> None:
            request = revoke_request(event, ticket_id, delivery.key(ticket_id))
            await self._nft.RevokeTicket(request, timeout=self._timeout)

        await each(tickets, revoke)

    async def payment_failed(self, event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        await self._send(payment_failed_message(event, delivery.key()), delivery)

    async def refund_issued(self, event: events_pb2.PaymentRefunded, delivery: Delivery) -> None:
        await self._send(refund_message(event, delivery.key()), delivery)

    async def _send(
        self, request: notify_pb2.SendNotificationRequest | None, delivery: Delivery
    ) -> None:
        if request is None:
            delivery.skip("the buyer has no email address")
            return
        await self._notify.SendNotification(request, timeout=self._timeout)
