"""Deterministic ids: ours (payments, refunds, payouts, tickets, events) and the Idempotency-Keys
we send Stripe, all derived from what names the operation.

The same caller + idempotency key always names the same payment, refund or payout, so a retried
request (even after a crash) resumes it instead of creating another; Stripe gets a key derived
from that id, the same on every try; an event id derives from its aggregate and what happened,
so racing paths cannot announce one change twice.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable

from payment_service.domain.model import LineItem

# Namespace of the ids this service derives (payment, refund, payout and ticket ids).
ID_NAMESPACE = uuid.UUID("6b1f3c2e-5a59-4d1e-9f65-8a1f0e4c7d21")

# Who "created" an automatic late-capture refund (refunds.created_by).
LATE_CAPTURE_ACTOR = "system:late-capture"


def derive_id(*parts: str) -> uuid.UUID:
    """A deterministic id from its parts (uuid5 in the service's namespace)."""
    return uuid.uuid5(ID_NAMESPACE, "\x1f".join(parts))


def payment_id(actor: str, idempotency_key: str) -> uuid.UUID:
    return derive_id("payment", actor, idempotency_key)


def refund_id(actor: str, idempotency_key: str) -> uuid.UUID:
    return derive_id("refund", actor, idempotency_key)


def payout_id(actor: str, idempotency_key: str) -> uuid.UUID:
    return derive_id("payout", actor, idempotency_key)


def external_refund_id(provider_refund_id: str) -> uuid.UUID:
    """Our id for a refund made at the provider (e.g. the Stripe dashboard)."""
    return derive_id("stripe-refund", provider_refund_id)


def late_capture_refund_id(pid: uuid.UUID) -> uuid.UUID:
    """The one automatic refund a late-captured payment can have (deterministic, so a retried
    or concurrent detection finds the same refund instead of making a second one)."""
    return derive_id("late-capture-refund", str(pid))


def event_id(aggregate_id: uuid.UUID, topic: str) -> uuid.UUID:
    """The id of the event announcing `topic` (e.g. "payment.succeeded") for one aggregate."""
    return derive_id(str(aggregate_id), topic)


def assign_ticket_ids(pid: uuid.UUID, items: Iterable[LineItem]) -> tuple[LineItem, ...]:
    """The line items with one ticket id per unit (deterministic where the caller gave none)."""
    result = []
    for i, item in enumerate(items):
        if not item.ticket_ids:
            ids = tuple(
                str(derive_id(str(pid), "ticket", str(i), str(n))) for n in range(item.quantity)
            )
            item = dataclasses.replace(item, ticket_ids=ids)
        result.append(item)
    return tuple(result)


# -- Stripe Idempotency-Keys -------------------------------------------------------------------


def intent_key(pid: uuid.UUID) -> str:
    return f"tt-payment-{pid}"


def cancel_key(pid: uuid.UUID) -> str:
    return f"tt-cancel-{pid}"


def refund_key(pid: uuid.UUID, rid: uuid.UUID) -> str:
    """A refund's key; the automatic late-capture refund's derives from the payment (one per
    payment)."""
    if rid == late_capture_refund_id(pid):
        return f"tt-autorefund-{pid}"
    return f"tt-refund-{rid}"


def payout_key(pid: uuid.UUID) -> str:
    return f"tt-payout-{pid}"
