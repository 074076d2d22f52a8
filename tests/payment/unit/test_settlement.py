"""Settlement decisions (pure): what a provider result does to a payment, refund or payout."""

from __future__ import annotations

import pytest

from payment_service.domain import ids
from payment_service.domain.model import RefundReason
from payment_service.domain.provider import IntentResult, PayoutResult, RefundResult, never_reached
from payment_service.domain.settlement import (
    Announce,
    Applied,
    Verdict,
    charge_posting,
    decide_dispute,
    decide_intent,
    decide_payout,
    decide_refund,
    late_capture_hold,
    status_for_refunds,
)
from payment_service.domain.states import PaymentStatus, PayoutStatus, RefundStatus
from tests.payment.unit.factories import NOW, payment, payout, refund

S = PaymentStatus
SUCCEEDED = IntentResult(intent_id="pi_1", status="succeeded", charge_id="ch_1")


def test_success_moves_posts_the_charge_and_announces() -> None:
    d = decide_intent(payment(), SUCCEEDED)
    assert (d.verdict, d.target, d.announce, d.post_charge) == (
        Verdict.MOVE,
        S.SUCCEEDED,
        Announce.SUCCEEDED,
        True,
    )
    assert d.changes == {
        "provider_charge_id": "ch_1",
        "client_secret": None,
        "next_action_url": None,
    }
    assert d.from_states is None  # the state machine's own sources


def test_decline_fails_with_its_codes_and_announces() -> None:
    declined = IntentResult(
        intent_id="pi_1", status="requires_payment_method", failure_code="card_declined",
        decline_code="insufficient_funds", failure_message="Declined.", declined=True,
    )  # fmt: skip
    d = decide_intent(payment(status=S.PENDING, provider_payment_id=None), declined)
    assert (d.verdict, d.target, d.announce, d.post_charge) == (
        Verdict.MOVE,
        S.FAILED,
        Announce.FAILED,
        False,
    )
    assert d.changes["provider_payment_id"] == "pi_1"
    assert (d.changes["failure_code"], d.changes["decline_code"]) == (
        "card_declined",
        "insufficient_funds",
    )
    missing = decide_intent(
        payment(status=S.PENDING, provider_payment_id=None), never_reached("", "x")
    )
    assert missing.changes["failure_code"] == "provider_payment_missing"


@pytest.mark.parametrize("closed", [S.CANCELLED, S.FAILED])
def test_capture_of_a_closed_payment_is_a_late_capture(closed: PaymentStatus) -> None:
    p = payment(status=closed)
    d = decide_intent(p, SUCCEEDED)
    assert (d.verdict, d.target, d.post_charge, d.announce) == (
        Verdict.LATE_CAPTURE,
        S.SUCCEEDED,
        True,
        None,  # nothing may be fulfilled for it
    )
    assert d.from_states == {S.CANCELLED, S.FAILED}
    hold = late_capture_hold(p, closed)
    assert (hold.refund_id, hold.amount, hold.reason, hold.ticket_ids) == (
        ids.late_capture_refund_id(p.id),
        p.total,
        RefundReason.OTHER,
        ("t-1", "t-2"),
    )
    assert closed.name in hold.note
    assert ids.refund_key(p.id, hold.refund_id) == f"tt-autorefund-{p.id}"


@pytest.mark.parametrize("later", [S.REFUNDED, S.PARTIALLY_REFUNDED, S.DISPUTED])
def test_a_stale_success_is_refused(later: PaymentStatus) -> None:
    assert decide_intent(payment(status=later), SUCCEEDED).verdict is Verdict.REFUSE


def test_another_intent_never_moves_the_payment() -> None:
    other = IntentResult(intent_id="pi_other", status="succeeded")
    d = decide_intent(payment(), other)
    assert d.verdict is Verdict.REFUSE and "another payment" in d.why


def test_confirmations_keep_the_state_and_record_ids() -> None:
    p = payment(status=S.PENDING, provider_payment_id=None)
    pending = decide_intent(p, IntentResult(intent_id="pi_1", status="requires_confirmation"))
    assert (pending.verdict, pending.changes) == (Verdict.KEEP, {"provider_payment_id": "pi_1"})
    same = decide_intent(payment(status=S.SUCCEEDED, provider_charge_id="ch_1"), SUCCEEDED)
    assert (same.verdict, same.changes) == (Verdict.KEEP, {})
    unknown = decide_intent(payment(), IntentResult(intent_id="pi_1", status="mystery"))
    assert unknown.verdict is Verdict.KEEP


def test_requires_action_keeps_the_client_secret() -> None:
    result = IntentResult(
        intent_id="pi_1", status="requires_action", client_secret="s", next_action_url="u"
    )
    d = decide_intent(payment(status=S.PENDING), result)
    assert d.changes == {"client_secret": "s", "next_action_url": "u"}
    assert d.announce is None and not d.post_charge


def test_the_charge_posting_splits_the_total() -> None:
    p = payment(status=S.SUCCEEDED)
    posting = charge_posting(p, NOW)
    assert posting.object_id == "pi_1"
    assert sum(e.amount for e in posting.entries) == 0
    assert max(e.amount for e in posting.entries) == p.total


def test_refund_success_takes_back_its_share_and_announces() -> None:
    p = payment(status=S.SUCCEEDED, refund_held=1_000)
    d = decide_refund(p, refund(), RefundResult("re_1", "succeeded"))
    assert (d.applied, d.status, d.succeeded, d.held, d.reverse) == (
        Applied.CHANGED,
        RefundStatus.SUCCEEDED,
        1_000,
        None,
        False,
    )
    assert d.share is not None and d.share.total == 1_000
    assert d.announce is Announce.REFUNDED
    assert d.changes == {"provider_refund_id": "re_1"}
    assert status_for_refunds(p, 1_000) is S.PARTIALLY_REFUNDED
    assert status_for_refunds(p, p.total) is S.REFUNDED


def test_a_paid_refund_that_fails_later_is_reversed() -> None:
    p = payment(status=S.PARTIALLY_REFUNDED, refund_held=1_000, refund_succeeded=1_000)
    paid = refund(status=RefundStatus.SUCCEEDED, provider_refund_id="re_1")
    d = decide_refund(p, paid, RefundResult("re_1", "failed", "expired_or_canceled_card"))
    assert (d.applied, d.status, d.reverse, d.succeeded, d.held, d.share) == (
        Applied.CHANGED,
        RefundStatus.FAILED,
        True,
        0,
        0,
        None,
    )
    assert d.changes == {"failure_reason": "expired_or_canceled_card"}
    assert status_for_refunds(p, 0) is S.SUCCEEDED  # refundable again


def test_refund_duplicates_and_finished_refunds_change_nothing() -> None:
    p = payment(status=S.SUCCEEDED)
    done = refund(status=RefundStatus.SUCCEEDED, provider_refund_id="re_1")
    assert decide_refund(p, done, RefundResult("re_1", "succeeded")).applied is Applied.UNCHANGED
    failed = refund(status=RefundStatus.FAILED, provider_refund_id="re_1")
    assert decide_refund(p, failed, RefundResult("re_1", "succeeded")).applied is Applied.UNCHANGED
    waiting = decide_refund(p, refund(), RefundResult("re_1", "requires_action"))
    assert (waiting.applied, waiting.status, waiting.share) == (
        Applied.CHANGED,
        RefundStatus.REQUIRES_ACTION,
        None,
    )


def test_disputes_reserve_the_venue_share_of_captured_payments_only() -> None:
    assert decide_dispute(payment(status=S.SUCCEEDED), 50_000).reserve == 10_000
    assert decide_dispute(payment(status=S.SUCCEEDED), 2_000).reserve == 2_000
    assert decide_dispute(payment(status=S.DISPUTED), 1).applied is Applied.UNCHANGED
    assert decide_dispute(payment(status=S.FAILED), 1).applied is Applied.REFUSED
    assert status_for_refunds(payment(status=S.DISPUTED), 1) is None


def test_payout_results() -> None:
    first = decide_payout(payout(), PayoutResult("po_1", "pending", arrival_date=1_900_000_000))
    assert (first.status, first.reverse, first.announce) == (None, False, Announce.PAYOUT_CREATED)
    assert first.changes["provider_payout_id"] == "po_1"
    paid = decide_payout(payout(provider_payout_id="po_1"), PayoutResult("po_1", "paid"))
    assert (paid.status, paid.announce, paid.reverse) == (PayoutStatus.PAID, None, False)
    refused = decide_payout(payout(), PayoutResult("", "failed", failure_code="invalid_currency"))
    assert (refused.status, refused.reverse) == (PayoutStatus.FAILED, True)
    again = decide_payout(payout(status=PayoutStatus.FAILED), PayoutResult("", "failed"))
    assert (again.status, again.reverse) == (None, False)  # reversed once only
