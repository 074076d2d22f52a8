"""nft's event relay: what its events make notify do (meshkit.routing).

  TicketMinted      → notify ticket_confirmation   the ticket, its mint address, the explorer
                                                   link for the cluster and the metadata link;
                                                   by email, else by SMS
                                                   (ticket_confirmation_sms), else nothing
  MintFailed        → notify ticket_delayed        by email; every MintFailed is final (the
                                                   minter announces only FAILED and
                                                   DEAD_LETTERED tickets; both wait for an
                                                   operator's requeue)
  TicketTransferred, TicketRevoked → (no route: delivered as a no-op)

Idempotency keys: uuid5 of (event id, route name) — one call per event, each event is one
ticket. dedup_keys `ticket:<id>:confirmation` and `ticket:<id>:delayed`: at most one
confirmation and one delay notice per ticket, whatever the channel and however often the events
are delivered. A buyer without email (and, for the confirmation, phone) gets nothing: skipped.
"""

from __future__ import annotations

from typing import Any

from meshkit.clients import MeshClients
from meshkit.notices import notification, time_text
from meshkit.routing import Delivery, Route
from tickettoken.nft.v1 import events_pb2
from tickettoken.notify.v1 import notify_pb2

CONFIRMATION = "notify.ticket_confirmation"
DELAYED = "notify.ticket_delayed"


def confirmation_message(
    event: events_pb2.TicketMinted, key: str
) -> notify_pb2.SendNotificationRequest | None:
    contact = event.buyer_contact
    variables = {
        "event_name": event.event_name or event.event_id,
        "venue_name": event.venue_name or event.venue_id,
        "event_starts_at": (
            time_text(event.event_starts_at, contact.time_zone)
            if event.HasField("event_starts_at")
            else ""
        ),
        "ticket_id": event.ticket_id,
        "mint_address": event.mint_address,
        "cluster": event.cluster,
        "metadata_uri": event.metadata_uri,
        "section": event.section,
        "row": event.row,
        "seat": event.seat,
        "ticket_type": event.ticket_type,
    }
    return notification(
        key=key,
        contact=contact,
        user_id=event.buyer_id,
        email_template="ticket_confirmation",
        sms_template="ticket_confirmation_sms",
        variables=variables,
        dedup_key=f"ticket:{event.ticket_id}:confirmation",
        # The buyer has just paid and waits for the ticket: not held back by quiet hours.
        priority=notify_pb2.NOTIFICATION_PRIORITY_HIGH,
        metadata={
            "ticket_id": event.ticket_id,
            "payment_id": event.payment_id,
            "mint_address": event.mint_address,
        },
    )


def delayed_message(
    event: events_pb2.MintFailed, key: str
) -> notify_pb2.SendNotificationRequest | None:
    return notification(
        key=key,
        contact=event.buyer_contact,
        user_id=event.buyer_id,
        email_template="ticket_delayed",
        variables={"event_name": event.event_name or event.event_id, "ticket_id": event.ticket_id},
        dedup_key=f"ticket:{event.ticket_id}:delayed",
        metadata={"ticket_id": event.ticket_id, "payment_id": event.payment_id},
    )


class NftRelay:
    """The actions of nft's routes, calling notify through the kit's mesh clients (service token
    `svc:nft`, request id, deadline `timeout_s` per call)."""

    def __init__(self, clients: MeshClients, *, timeout_s: float) -> None:
        self._notify = clients.notify
        self._timeout = timeout_s

    def routes(self) -> list[Route[Any]]:
        return [
            Route(events_pb2.TicketMinted, CONFIRMATION, self.ticket_confirmation),
            Route(events_pb2.MintFailed, DELAYED, self.ticket_delayed),
        ]

    async def ticket_confirmation(self, event: events_pb2.TicketMinted, delivery: Delivery) -> None:
        request = confirmation_message(event, delivery.key())
        if request is None:
            delivery.skip("the buyer has no email address or phone number")
            return
        await self._notify.SendNotification(request, timeout=self._timeout)

    async def ticket_delayed(self, event: events_pb2.MintFailed, delivery: Delivery) -> None:
        request = delayed_message(event, delivery.key())
        if request is None:
            delivery.skip("the buyer has no email address")
            return
        await self._notify.SendNotification(request, timeout=self._timeout)
