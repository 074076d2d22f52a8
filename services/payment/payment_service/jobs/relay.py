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
  PaymentFailed    → notify payment_failed  email to the buyer
  PayoutCreated    → (no route: delivered as a no-op)

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
from tickettoken.nft.v1 import nft_pb2
from tickettoken.notify.v1 import notify_pb2
from tickettoken.payment.v1 import events_pb2, payment_pb2

MINT = "nft.mint_tickets"
REVOKE = "nft.revoke_ticket"
PAYMENT_FAILED = "notify.payment_failed"
REFUND_ISSUED = "notify.refund_issued"

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


class PaymentRelay:
    """The actions of payment's routes, calling nft and notify through the kit's mesh clients
    (service token `svc:payment`, request id, deadline `timeout_s` per call)."""

    def __init__(self, clients: MeshClients, *, timeout_s: float) -> None:
        self._nft = clients.nft
        self._notify = clients.notify
        self._timeout = timeout_s

    def routes(self) -> list[Route[Any]]:
        return [
            Route(events_pb2.PaymentSucceeded, MINT, self.mint_tickets),
            Route(events_pb2.PaymentFailed, PAYMENT_FAILED, self.payment_failed),
            Route(events_pb2.PaymentRefunded, REVOKE, self.revoke_tickets),
            Route(events_pb2.PaymentRefunded, REFUND_ISSUED, self.refund_issued),
        ]

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
