"""A cart's rules that depend on this deployment's settings, and its price before fees.

The contract already refuses what any deployment would (empty carts, non-positive quantities,
negative prices, malformed currencies); what is left depends on settings: which currencies are
sold, how many tickets one order may buy, the largest payment. Violations name the request's
field paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payment_service.domain.errors import InvalidInput, Violation
from payment_service.domain.model import LineItem
from payment_service.domain.money import INT64_MAX


@dataclass(frozen=True, slots=True)
class Cart:
    subtotal: int
    ticket_count: int


def price_cart(
    currency: str,
    items: Sequence[LineItem],
    *,
    supported_currencies: Sequence[str],
    max_tickets: int | None = None,
    require_subtotal: bool = False,
) -> Cart:
    """Sum a cart; raise InvalidInput naming every rule it breaks."""
    violations: list[Violation] = []
    if currency not in supported_currencies:
        violations.append(
            Violation("currency", f"unsupported; one of {', '.join(supported_currencies)}")
        )
    subtotal = 0
    tickets = 0
    for i, item in enumerate(items):
        if item.ticket_ids and len(item.ticket_ids) != item.quantity:
            violations.append(
                Violation(f"line_items[{i}].ticket_ids", "one id per ticket (quantity) or none")
            )
        subtotal += item.unit_price * item.quantity
        tickets += item.quantity
    if subtotal > INT64_MAX:
        violations.append(Violation("line_items", "amounts exceed the int64 range"))
    if max_tickets is not None and tickets > max_tickets:
        violations.append(Violation("line_items", f"at most {max_tickets} tickets per order"))
    if require_subtotal and subtotal <= 0 and not violations:
        violations.append(Violation("line_items", "the subtotal must be positive"))
    if violations:
        raise InvalidInput(violations)
    return Cart(subtotal=subtotal, ticket_count=tickets)


def check_total(total: int, max_payment: int) -> None:
    """A payment's total must not exceed the largest payment this deployment takes."""
    if total > max_payment:
        raise InvalidInput(
            [Violation("line_items", f"total {total} exceeds the maximum payment {max_payment}")]
        )
