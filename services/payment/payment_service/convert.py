"""Proto ⇄ domain: request validation (field violations) and response building.

Validation here is about the shape of a request (ids present, quantities positive, one currency,
amounts in range); business rules (refundable remainder, payout limits, state transitions) live
in the application modules and answer FAILED_PRECONDITION.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from meshkit.errors import FieldViolation, InvalidArgument, invalid_argument
from payment_service.domain.fees import FeeQuote, Jurisdiction, TaxQuote
from payment_service.domain.money import INT64_MAX
from payment_service.domain.states import PaymentStatus
from payment_service.store import PaymentRecord, PayoutRecord, RefundRecord
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2

MAX_ID_LENGTH = 128
MAX_METADATA_ENTRIES = 20
MAX_METADATA_LENGTH = 500
# Namespace of the ids this service derives (payment, refund, payout and ticket ids).
ID_NAMESPACE = uuid.UUID("6b1f3c2e-5a59-4d1e-9f65-8a1f0e4c7d21")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def derive_id(*parts: str) -> uuid.UUID:
    """A deterministic id: the same caller + idempotency key always names the same object, so
    a retried request (even after a crash) resumes it instead of creating another."""
    return uuid.uuid5(ID_NAMESPACE, "\x1f".join(parts))


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def money(currency: str, amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency=currency, amount_minor=amount)


def check_id(value: str, field: str, violations: list[FieldViolation]) -> None:
    if not value:
        violations.append(FieldViolation(field, "required"))
    elif len(value) > MAX_ID_LENGTH or not value.isprintable():
        violations.append(FieldViolation(field, f"at most {MAX_ID_LENGTH} printable characters"))


def check_currency(
    value: str, field: str, supported: Sequence[str], violations: list[FieldViolation]
) -> None:
    if not value:
        violations.append(FieldViolation(field, "required"))
    elif value not in supported:
        violations.append(FieldViolation(field, f"unsupported; one of {', '.join(supported)}"))


def parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError):
        raise invalid_argument([FieldViolation(field, "must be a payment service id")]) from None


@dataclass(frozen=True, slots=True)
class Cart:
    subtotal: int
    ticket_count: int


def validate_cart(
    items: Sequence[payment_pb2.LineItem],
    currency: str,
    *,
    max_tickets: int | None,
    violations: list[FieldViolation],
) -> Cart:
    """Sum a cart, appending a violation for every bad line (nothing raised here)."""
    if not items:
        violations.append(FieldViolation("line_items", "at least one line item is required"))
    subtotal = 0
    tickets = 0
    for i, item in enumerate(items):
        where = f"line_items[{i}]"
        check_id(item.ticket_type_id, f"{where}.ticket_type_id", violations)
        if item.quantity <= 0:
            violations.append(FieldViolation(f"{where}.quantity", "must be positive"))
        if not item.HasField("unit_price"):
            violations.append(FieldViolation(f"{where}.unit_price", "required"))
        else:
            if item.unit_price.currency != currency:
                violations.append(
                    FieldViolation(f"{where}.unit_price.currency", "must equal currency")
                )
            if item.unit_price.amount_minor < 0:
                violations.append(
                    FieldViolation(f"{where}.unit_price.amount_minor", "must not be negative")
                )
        if item.ticket_ids and len(item.ticket_ids) != max(item.quantity, 0):
            violations.append(
                FieldViolation(f"{where}.ticket_ids", "one id per ticket (quantity) or none")
            )
        if item.quantity > 0 and item.unit_price.amount_minor >= 0:
            line = item.unit_price.amount_minor * item.quantity
            subtotal += line
            tickets += item.quantity
    if subtotal > INT64_MAX:
        violations.append(FieldViolation("line_items", "amounts exceed the int64 range"))
    if max_tickets is not None and tickets > max_tickets:
        violations.append(FieldViolation("line_items", f"at most {max_tickets} tickets per order"))
    return Cart(subtotal=subtotal, ticket_count=tickets)


def check_metadata(metadata: dict[str, str], violations: list[FieldViolation]) -> None:
    if len(metadata) > MAX_METADATA_ENTRIES:
        violations.append(FieldViolation("metadata", f"at most {MAX_METADATA_ENTRIES} entries"))
    for key, value in metadata.items():
        if len(key) > 40 or len(value) > MAX_METADATA_LENGTH:
            violations.append(
                FieldViolation(
                    f"metadata[{key[:40]}]", f"keys ≤ 40, values ≤ {MAX_METADATA_LENGTH} chars"
                )
            )


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise invalid_argument(violations)


# -- jurisdiction and fees -----------------------------------------------------------------------


def jurisdiction_from_proto(j: payment_pb2.TaxJurisdiction) -> Jurisdiction:
    return Jurisdiction(
        country_code=j.country_code.upper(),
        region_code=j.region_code.upper(),
        locality=j.locality,
        postal_code=j.postal_code,
        entertainment_tax_applies=j.entertainment_tax_applies,
    )


def jurisdiction_to_proto(j: Jurisdiction) -> payment_pb2.TaxJurisdiction:
    return payment_pb2.TaxJurisdiction(
        country_code=j.country_code,
        region_code=j.region_code,
        locality=j.locality,
        postal_code=j.postal_code,
        entertainment_tax_applies=j.entertainment_tax_applies,
    )


def tax_to_proto(currency: str, tax: TaxQuote) -> payment_pb2.TaxBreakdown:
    return payment_pb2.TaxBreakdown(
        jurisdiction=jurisdiction_to_proto(tax.jurisdiction),
        state_tax_bps=tax.rates.state_bps,
        state_tax=money(currency, tax.state_tax),
        local_tax_bps=tax.rates.local_bps,
        local_tax=money(currency, tax.local_tax),
        special_tax_bps=tax.rates.special_bps,
        special_tax=money(currency, tax.special_tax),
        total_tax=money(currency, tax.total_tax),
    )


def fees_to_proto(q: FeeQuote) -> payment_pb2.FeeBreakdown:
    c = q.currency
    return payment_pb2.FeeBreakdown(
        subtotal=money(c, q.subtotal),
        ticket_count=q.ticket_count,
        venue_tier=int(q.tier),  # type: ignore[arg-type]
        platform_fee_bps=q.platform_fee_bps,
        platform_fee=money(c, q.platform_fee),
        gas_fee_per_ticket=money(c, q.gas_fee_per_ticket),
        gas_fee=money(c, q.gas_fee),
        tax=tax_to_proto(c, q.tax),
        total=money(c, q.total),
        venue_payout=money(c, q.venue_payout),
    )


# -- payments ------------------------------------------------------------------------------------


def assign_ticket_ids(
    payment_id: uuid.UUID, items: Iterable[payment_pb2.LineItem]
) -> list[payment_pb2.LineItem]:
    """Copies of the line items with one ticket id per unit (deterministic when not given)."""
    result = []
    for i, item in enumerate(items):
        line = payment_pb2.LineItem()
        line.CopyFrom(item)
        if not line.ticket_ids:
            line.ticket_ids.extend(
                str(derive_id(str(payment_id), "ticket", str(i), str(n)))
                for n in range(item.quantity)
            )
        result.append(line)
    return result


def payment_details(
    *,
    line_items: Sequence[payment_pb2.LineItem],
    fees: payment_pb2.FeeBreakdown,
    request: payment_pb2.CreatePaymentRequest,
) -> bytes:
    """The parts of a payment that never change, serialized for the `details` column."""
    details = payment_pb2.Payment(
        line_items=line_items,
        fees=fees,
        buyer_contact=request.buyer_contact,
        event=request.event,
        metadata=dict(request.metadata),
    )
    return details.SerializeToString(deterministic=True)


def ticket_ids_of(record: PaymentRecord) -> list[str]:
    details = payment_pb2.Payment.FromString(record.details)
    return [t for item in details.line_items for t in item.ticket_ids]


def payment_to_proto(
    record: PaymentRecord, refunds: Sequence[RefundRecord] = ()
) -> payment_pb2.Payment:
    payment = payment_pb2.Payment.FromString(record.details)
    c = record.currency
    status = PaymentStatus[record.status]
    payment.id = str(record.id)
    payment.status = int(status)  # type: ignore[assignment]
    payment.order_id = record.order_id
    payment.venue_id = record.venue_id
    payment.event_id = record.event_id
    payment.buyer_id = record.buyer_id
    payment.total.CopyFrom(money(c, record.total))
    payment.refunded.CopyFrom(money(c, record.refund_held))
    refundable = (
        record.refundable
        if status
        in (
            PaymentStatus.SUCCEEDED,
            PaymentStatus.PARTIALLY_REFUNDED,
        )
        else 0
    )
    payment.refundable.CopyFrom(money(c, refundable))
    payment.provider = record.provider
    payment.provider_payment_id = record.provider_payment_id or ""
    payment.payment_method_id = record.payment_method_id
    if status is PaymentStatus.REQUIRES_ACTION:
        payment.client_secret = record.client_secret or ""
        payment.next_action_url = record.next_action_url or ""
    payment.failure_code = record.failure_code or ""
    payment.decline_code = record.decline_code or ""
    payment.failure_message = record.failure_message or ""
    payment.refunds.extend(refund_to_proto(r) for r in refunds)
    payment.created_at.CopyFrom(ts(record.created_at))
    payment.updated_at.CopyFrom(ts(record.updated_at))
    if record.succeeded_at is not None:
        payment.succeeded_at.CopyFrom(ts(record.succeeded_at))
    return payment


def refund_to_proto(r: RefundRecord) -> payment_pb2.Refund:
    return payment_pb2.Refund(
        id=str(r.id),
        payment_id=str(r.payment_id),
        status=int(r.state),  # type: ignore[arg-type]
        amount=money(r.currency, r.amount),
        reason=r.reason,  # type: ignore[arg-type]
        note=r.note,
        ticket_ids=list(r.ticket_ids),
        provider_refund_id=r.provider_refund_id or "",
        failure_reason=r.failure_reason or "",
        created_at=ts(r.created_at),
        updated_at=ts(r.updated_at),
    )


def payout_to_proto(p: PayoutRecord) -> payment_pb2.Payout:
    payout = payment_pb2.Payout(
        id=str(p.id),
        venue_id=p.venue_id,
        status=int(p.state),  # type: ignore[arg-type]
        amount=money(p.currency, p.amount),
        fee=money(p.currency, p.fee),
        net_amount=money(p.currency, p.net_amount),
        instant=p.instant,
        provider="stripe",
        provider_payout_id=p.provider_payout_id or "",
        failure_code=p.failure_code or "",
        failure_message=p.failure_message or "",
        created_at=ts(p.created_at),
        updated_at=ts(p.updated_at),
    )
    if p.expected_arrival_at is not None:
        payout.expected_arrival_at.CopyFrom(ts(p.expected_arrival_at))
    return payout


# -- pagination ----------------------------------------------------------------------------------


def encode_page_token(created_at: datetime, payment_id: uuid.UUID) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}:{payment_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        micros, _, pid = raw.partition(":")
        when = _EPOCH + timedelta(microseconds=int(micros))
        return when, uuid.UUID(pid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            "page_token is not valid",
            field_violations=[FieldViolation("page_token", "not a token from this service")],
        ) from None
