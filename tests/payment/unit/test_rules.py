"""The rules left to the service once the contract has checked a request: settings- and
state-dependent limits, with the request's field paths."""

from __future__ import annotations

import pytest

from payment_service.domain import payouts, refunds
from payment_service.domain.cart import check_total, price_cart
from payment_service.domain.errors import (
    DailyPayoutLimit,
    InsufficientPayable,
    InvalidInput,
    NothingToRefund,
    PaymentNotRefundable,
    RefundExceedsRefundable,
)
from payment_service.domain.ids import assign_ticket_ids, derive_id
from payment_service.domain.model import LineItem
from payment_service.domain.money import INT64_MAX
from payment_service.domain.states import PaymentStatus
from tests.payment.unit.factories import PAYMENT_ID, payment

USD = ["USD", "EUR"]


def fields(info: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [v.field for v in info.value.violations]


def test_cart_prices_and_limits() -> None:
    items = [LineItem("ga", 2, 5_000), LineItem("vip", 1, 20_000)]
    cart = price_cart("USD", items, supported_currencies=USD, max_tickets=4)
    assert (cart.subtotal, cart.ticket_count) == (30_000, 3)
    with pytest.raises(InvalidInput) as info:
        price_cart("JPY", [LineItem("ga", 5, 100)], supported_currencies=USD, max_tickets=4)
    assert fields(info) == ["currency", "line_items"]
    with pytest.raises(InvalidInput) as info:
        price_cart("USD", [LineItem("ga", 4, INT64_MAX // 2)], supported_currencies=USD)
    assert fields(info) == ["line_items"]
    with pytest.raises(InvalidInput) as info:
        price_cart("USD", [LineItem("ga", 2, 1, ticket_ids=("t",))], supported_currencies=USD)
    assert fields(info) == ["line_items[0].ticket_ids"]
    with pytest.raises(InvalidInput):
        price_cart("USD", [LineItem("free", 1, 0)], supported_currencies=USD, require_subtotal=True)
    assert price_cart("USD", [LineItem("free", 1, 0)], supported_currencies=USD).subtotal == 0
    check_total(1_000_000, 1_000_000)
    with pytest.raises(InvalidInput):
        check_total(1_000_001, 1_000_000)


def test_ticket_ids_are_assigned_deterministically_where_missing() -> None:
    given = LineItem("vip", 1, 100, ticket_ids=("mine",))
    first = assign_ticket_ids(PAYMENT_ID, [LineItem("ga", 2, 100), given])
    assert first == assign_ticket_ids(PAYMENT_ID, [LineItem("ga", 2, 100), given])
    assert first[0].ticket_ids == (
        str(derive_id(str(PAYMENT_ID), "ticket", "0", "0")),
        str(derive_id(str(PAYMENT_ID), "ticket", "0", "1")),
    )
    assert first[1] is given


def test_refund_requests_and_plans() -> None:
    paid = payment(status=PaymentStatus.SUCCEEDED)
    with pytest.raises(InvalidInput) as info:
        refunds.check_request(paid, "EUR", [])
    assert fields(info) == ["amount.currency"]
    with pytest.raises(InvalidInput) as info:
        refunds.check_request(paid, None, ["t-1", "not-mine"])
    assert fields(info) == ["ticket_ids"]
    assert refunds.plan(paid, None, []) == (paid.total, ("t-1", "t-2"))  # full: every ticket
    assert refunds.plan(paid, 100, []) == (100, ())
    assert refunds.plan(paid, 100, ["t-2"]) == (100, ("t-2",))
    with pytest.raises(RefundExceedsRefundable) as exceeded:
        refunds.plan(paid, paid.total + 1, [])
    assert exceeded.value.facts == {"refundable": str(paid.total)}
    with pytest.raises(NothingToRefund):
        refunds.plan(payment(status=PaymentStatus.SUCCEEDED, refund_held=paid.total), None, [])
    with pytest.raises(PaymentNotRefundable):
        refunds.plan(payment(status=PaymentStatus.PENDING), None, [])


def test_payout_rules() -> None:
    with pytest.raises(InvalidInput):
        payouts.check_amount(9_999, 10_000)
    payouts.check_amount(10_000, 10_000)
    assert payouts.fee(60_000, True, 100) == 600
    assert payouts.fee(60_000, False, 100) == 0
    payouts.check_limits(50_000, payable=50_000, paid_today=50_000, daily_limit=100_000)
    with pytest.raises(InsufficientPayable):
        payouts.check_limits(50_001, payable=50_000, paid_today=0, daily_limit=100_000)
    with pytest.raises(DailyPayoutLimit) as info:
        payouts.check_limits(50_000, payable=90_000, paid_today=60_000, daily_limit=100_000)
    assert info.value.facts == {"remaining": "40000"}
