"""Settlement decisions: given an object's state and what the provider reports, what follows.

Pure functions, no I/O: each returns a decision (the transition, the field changes, the ledger
posting, the refund to hold and the event to announce) that `usecases.settlement` carries out in
one transaction under the object's row lock. The same decision is taken whoever learnt the
result: a create's or cancel's answer, a webhook, or reconciliation.

Late capture: Stripe reporting a captured PaymentIntent for a payment we closed (CANCELLED or
FAILED) is neither ignored nor kept. The payment moves to SUCCEEDED (only through
`LATE_CAPTURE_FROM`, never through the ordinary table), the charge is posted, no
`PaymentSucceeded` is announced (nothing may be fulfilled for it), and a refund of the whole
total is held under a deterministic id, to be sent to Stripe after the transaction commits. Its
success then settles like any refund, so the ledger nets to zero.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from payment_service.domain import ledger
from payment_service.domain.ids import LATE_CAPTURE_ACTOR, late_capture_refund_id
from payment_service.domain.model import Payment, Payout, Refund, RefundReason
from payment_service.domain.provider import IntentResult, PayoutResult, RefundResult
from payment_service.domain.states import (
    CAPTURED_STATES,
    LATE_CAPTURE_FROM,
    OPEN_STATES,
    CauseKind,
    PaymentStatus,
    PayoutStatus,
    RefundStatus,
    from_stripe_intent,
    from_stripe_payout,
    from_stripe_refund,
    status_after_refunds,
)

Value = str | int | datetime | None
Changes = Mapping[str, Value]
"""New values by entity field name (e.g. `provider_payment_id`); the store writes them."""


class Applied(enum.Enum):
    """What applying a provider result did."""

    CHANGED = "changed"  # the state moved (and its money and events were written)
    UNCHANGED = "unchanged"  # already there: a duplicate or a confirmation of what we know
    REFUSED = "refused"  # the state machine does not allow it (stale or out of order)
    # Stripe captured a payment we had closed: charged, and a full refund is held to be sent
    # once the transaction has committed (module doc).
    LATE_CAPTURE = "late_capture"


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a state changed: an RPC (method), a webhook (event id) or a reconciliation run."""

    kind: CauseKind
    ref: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.ref}"


# -- payment intents ----------------------------------------------------------------------------


class Verdict(enum.Enum):
    MOVE = "move"  # transition to `target`
    KEEP = "keep"  # no transition; record `changes` (provider ids) if any
    REFUSE = "refuse"  # stale, out of order, or not this payment's intent
    LATE_CAPTURE = "late_capture"  # module doc


class Announce(enum.Enum):
    SUCCEEDED = "payment.succeeded"
    FAILED = "payment.failed"
    REFUNDED = "payment.refunded"
    PAYOUT_CREATED = "payout.created"


@dataclass(frozen=True, slots=True)
class IntentDecision:
    verdict: Verdict
    target: PaymentStatus | None = None
    changes: Changes = field(default_factory=dict)
    why: str = ""

    @property
    def post_charge(self) -> bool:
        return self.target is PaymentStatus.SUCCEEDED and self.verdict in (
            Verdict.MOVE,
            Verdict.LATE_CAPTURE,
        )

    @property
    def announce(self) -> Announce | None:
        if self.verdict is not Verdict.MOVE:
            return None
        if self.target is PaymentStatus.SUCCEEDED:
            return Announce.SUCCEEDED
        if self.target is PaymentStatus.FAILED:
            return Announce.FAILED
        return None

    @property
    def from_states(self) -> frozenset[PaymentStatus] | None:
        """The states the transition may start from, when not the state machine's table."""
        return LATE_CAPTURE_FROM if self.verdict is Verdict.LATE_CAPTURE else None


def intent_target(result: IntentResult) -> PaymentStatus | None:
    """Our status for what the provider reports (None: it means nothing to us)."""
    return PaymentStatus.FAILED if result.declined else from_stripe_intent(result.status)


def decide_intent(payment: Payment, result: IntentResult) -> IntentDecision:
    """Bring a payment to its PaymentIntent's state, if that moves it forward."""
    if result.intent_id and payment.provider_payment_id not in (None, result.intent_id):
        # Another PaymentIntent claims this payment (metadata copied by hand, or a provider that
        # does not deduplicate): it must never move our payment.
        return IntentDecision(Verdict.REFUSE, why="the payment intent belongs to another payment")
    target = intent_target(result)
    changes: dict[str, Value] = {}
    if result.intent_id and not payment.provider_payment_id:
        changes["provider_payment_id"] = result.intent_id
    if result.charge_id and result.charge_id != payment.provider_charge_id:
        changes["provider_charge_id"] = result.charge_id
    if target is None or target is PaymentStatus.PENDING or target is payment.status:
        return IntentDecision(Verdict.KEEP, changes=changes)
    if target is PaymentStatus.REQUIRES_ACTION:
        changes["client_secret"] = result.client_secret or None
        changes["next_action_url"] = result.next_action_url or None
    else:
        changes["client_secret"] = None
        changes["next_action_url"] = None
    if target is PaymentStatus.FAILED:
        changes["failure_code"] = result.failure_code or "payment_failed"
        changes["decline_code"] = result.decline_code or None
        changes["failure_message"] = result.failure_message or None
    if target is PaymentStatus.SUCCEEDED and payment.status in LATE_CAPTURE_FROM:
        return IntentDecision(Verdict.LATE_CAPTURE, target, changes)
    if target is PaymentStatus.SUCCEEDED and payment.status not in OPEN_STATES:
        # Already captured and moved on (refunded, disputed): a late "succeeded" is stale.
        return IntentDecision(Verdict.REFUSE, target, why=f"{payment.status.name} is past capture")
    return IntentDecision(Verdict.MOVE, target, changes)


def charge_posting(payment: Payment, available_at: datetime) -> ledger.Posting:
    """The captured total: Stripe holds it; it is owed to venue, platform, gas and tax."""
    return ledger.charge_posting(
        object_id=payment.provider_payment_id or f"payment:{payment.id}",
        currency=payment.currency,
        venue_id=payment.venue_id,
        split=payment.split,
        available_at=available_at,
    )


@dataclass(frozen=True, slots=True)
class RefundHold:
    """A new PENDING refund, and the part of the payment it holds."""

    refund_id: uuid.UUID
    amount: int
    reason: RefundReason
    note: str
    ticket_ids: tuple[str, ...]
    created_by: str
    provider_refund_id: str | None = None


def late_capture_hold(payment: Payment, closed_as: PaymentStatus) -> RefundHold:
    """The automatic full refund of a late capture (module doc)."""
    return RefundHold(
        refund_id=late_capture_refund_id(payment.id),
        amount=payment.total,
        reason=RefundReason.OTHER,
        note=f"automatic refund: Stripe captured the payment after it was {closed_as.name}",
        ticket_ids=tuple(payment.ticket_ids),
        created_by=LATE_CAPTURE_ACTOR,
    )


# -- refunds ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefundDecision:
    applied: Applied
    status: RefundStatus | None = None
    changes: Changes = field(default_factory=dict)
    # Ledger: the share of each part the refund takes back, or the reversal of its posting.
    share: ledger.Split | None = None
    reverse: bool = False
    # The payment's refund totals afterwards (None: unchanged).
    succeeded: int | None = None
    held: int | None = None

    @property
    def announce(self) -> Announce | None:
        return Announce.REFUNDED if self.share is not None else None


def refund_object_id(refund: Refund, provider_refund_id: str = "") -> str:
    """The provider object a refund's postings are about (unique per posting kind)."""
    return provider_refund_id or refund.provider_refund_id or f"refund:{refund.id}"


def decide_refund(payment: Payment, refund: Refund, result: RefundResult) -> RefundDecision:
    """Apply a refund's provider state to the refund and its payment."""
    new = from_stripe_refund(result.status)
    old = refund.status
    changes: dict[str, Value] = {}
    if result.refund_id and refund.provider_refund_id != result.refund_id:
        changes["provider_refund_id"] = result.refund_id
    if old in (RefundStatus.FAILED, RefundStatus.CANCELLED) or new is old:
        return RefundDecision(Applied.UNCHANGED, changes=changes)
    if new is RefundStatus.SUCCEEDED:
        share = ledger.refund_split(payment.split, payment.refund_succeeded, refund.amount)
        return RefundDecision(
            Applied.CHANGED,
            new,
            changes,
            share=share,
            succeeded=payment.refund_succeeded + refund.amount,
        )
    if new in (RefundStatus.FAILED, RefundStatus.CANCELLED):
        was_paid = old is RefundStatus.SUCCEEDED
        changes["failure_reason"] = result.failure_reason or None
        return RefundDecision(
            Applied.CHANGED,
            new,
            changes,
            reverse=was_paid,
            succeeded=payment.refund_succeeded - (refund.amount if was_paid else 0),
            held=payment.refund_held - refund.amount,
        )
    # pending / requires_action: only the provider's id and status are news.
    return RefundDecision(Applied.CHANGED, new, changes)


def status_for_refunds(payment: Payment, succeeded: int) -> PaymentStatus | None:
    """The transition a payment's new refund total calls for (None: none). A captured payment
    follows its refunds (a failed refund can make it refundable again); a disputed one stays."""
    if payment.status not in CAPTURED_STATES and payment.status is not PaymentStatus.REFUNDED:
        return None
    target = status_after_refunds(payment.total, succeeded)
    if target is payment.status and target is not PaymentStatus.PARTIALLY_REFUNDED:
        return None
    return target


# -- disputes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DisputeDecision:
    applied: Applied
    reserve: int = 0  # venue money moved into reserve


def decide_dispute(payment: Payment, amount: int) -> DisputeDecision:
    """An opened dispute: DISPUTED, and the disputed part of the venue's money reserved."""
    if payment.status not in CAPTURED_STATES:
        return DisputeDecision(
            Applied.UNCHANGED if payment.status is PaymentStatus.DISPUTED else Applied.REFUSED
        )
    reserve = min(amount, payment.subtotal) if amount > 0 else payment.subtotal
    return DisputeDecision(Applied.CHANGED, reserve)


# -- payouts ------------------------------------------------------------------------------------

PAYOUT_TERMINAL = frozenset({PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class PayoutDecision:
    status: PayoutStatus | None = None
    changes: Changes = field(default_factory=dict)
    reverse: bool = False  # the payout failed: give the venue its money back
    announce: Announce | None = None


def decide_payout(payout: Payout, result: PayoutResult) -> PayoutDecision:
    """Apply the provider's view of a payout: its id, status, and a reversal if it failed."""
    new = from_stripe_payout(result.status)
    changes: dict[str, Value] = {}
    if result.payout_id and not payout.provider_payout_id:
        changes["provider_payout_id"] = result.payout_id
    if result.arrival_date:
        changes["expected_arrival_at"] = datetime.fromtimestamp(result.arrival_date, UTC)
    status = new if payout.status not in PAYOUT_TERMINAL and new is not payout.status else None
    failing = new in (PayoutStatus.FAILED, PayoutStatus.CANCELLED)
    reverse = failing and payout.status not in PAYOUT_TERMINAL
    if reverse:
        changes["failure_code"] = result.failure_code or None
        changes["failure_message"] = result.failure_message or None
    first_answer = bool(result.payout_id) and not payout.provider_payout_id
    announce = Announce.PAYOUT_CREATED if first_answer else None
    return PayoutDecision(status, changes, reverse, announce)
