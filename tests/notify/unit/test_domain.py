"""The status machine, retry classification, receipts, addresses and unsubscribe tokens."""

from __future__ import annotations

import random
import uuid

import pytest

from notify_service.domain import receipts, states, unsubscribe
from notify_service.domain.addresses import (
    AddressRules,
    destination_for,
    mask_email,
    mask_phone,
    normalise_phone,
)
from notify_service.domain.errors import BadAddress
from notify_service.domain.model import Channel, Recipient, Status, SuppressionReason
from notify_service.domain.retry import FailureKind, RetryPolicy, SendFailure, backoff, decide

S = Status
POLICY = RetryPolicy(max_attempts=3, base_delay=2.0, max_delay=60.0)
RNG = random.Random(7)


def test_the_status_machine_only_moves_forward() -> None:
    assert states.can_move(S.QUEUED, S.SENDING) and states.can_move(S.SENDING, S.SENT)
    assert states.can_move(S.SENT, S.DELIVERED) and states.can_move(S.DELIVERED, S.BOUNCED)
    assert states.can_move(S.DEAD_LETTERED, S.QUEUED)  # the operator's retry
    assert states.can_move(S.SENDING, S.DELIVERED)  # a receipt that overtook our commit
    for source, target in [
        (S.DELIVERED, S.SENT),
        (S.BOUNCED, S.DELIVERED),
        (S.SENT, S.QUEUED),
        (S.SUPPRESSED, S.QUEUED),
        (S.FAILED, S.SENT),
        (S.DELIVERED, S.FAILED),
    ]:
        assert not states.can_move(source, target), (source, target)
    assert states.FINAL.isdisjoint(states.PENDING)


def f(kind: FailureKind, code: str = "x", **kw: object) -> SendFailure:
    return SendFailure(kind, code, **kw)  # type: ignore[arg-type]


def test_transient_failures_retry_with_backoff_then_dead_letter() -> None:
    step = decide([f(FailureKind.TRANSIENT, "http_503")], 1, POLICY, RNG)
    assert step.status is S.QUEUED and 1.0 <= step.delay <= 2.0
    step = decide([f(FailureKind.TRANSIENT)], 2, POLICY, RNG)
    assert 2.0 <= step.delay <= 4.0
    assert decide([f(FailureKind.UNKNOWN)], 3, POLICY, RNG).status is S.DEAD_LETTERED
    hinted = decide([f(FailureKind.TRANSIENT, retry_after=30.0)], 1, POLICY, RNG)
    assert hinted.delay == 30.0
    assert all(backoff(n, POLICY, RNG) <= 60.0 for n in range(1, 40))


def test_permanent_failures_stop_at_once() -> None:
    bounce = decide([f(FailureKind.RECIPIENT, "smtp_550", suppress=True)], 1, POLICY, RNG)
    assert (bounce.status, bounce.error_code, bounce.suppress) == (S.BOUNCED, "smtp_550", True)
    content = decide([f(FailureKind.TRANSIENT), f(FailureKind.CONTENT, "smtp_554")], 1, POLICY)
    assert (content.status, content.error_code) == (S.FAILED, "smtp_554")
    rejected = decide([f(FailureKind.REJECTED, "sendgrid_401")], 1, POLICY)
    assert rejected.status is S.DEAD_LETTERED  # our credentials: an operator fixes and retries
    mixed = decide([f(FailureKind.REJECTED), f(FailureKind.TRANSIENT, "circuit_open")], 1, POLICY)
    assert (mixed.status, mixed.error_code) == (S.QUEUED, "circuit_open")
    assert FailureKind.TRANSIENT.try_next_provider and not FailureKind.RECIPIENT.try_next_provider


def test_sendgrid_events_map_to_statuses_and_suppressions() -> None:
    base = {"sg_event_id": "e1", "sg_message_id": "abc.filter-0", "email": "a@x.test"}
    delivered = receipts.sendgrid_receipt({**base, "event": "delivered", "notification_id": "n"})
    assert (delivered.status, delivered.provider_message_id, delivered.notification_id) == (
        S.DELIVERED,
        "abc",
        "n",
    )
    bounce = receipts.sendgrid_receipt({**base, "event": "bounce", "type": "bounce"})
    assert (bounce.status, bounce.suppression) == (S.BOUNCED, SuppressionReason.HARD_BOUNCE)
    blocked = receipts.sendgrid_receipt({**base, "event": "bounce", "type": "blocked"})
    assert blocked.status is S.FAILED and blocked.suppression is None
    spam = receipts.sendgrid_receipt({**base, "event": "spamreport"})
    assert (spam.effect, spam.suppression) == (
        receipts.Effect.SUPPRESS,
        SuppressionReason.COMPLAINT,
    )
    assert receipts.sendgrid_receipt({**base, "event": "open"}).effect is receipts.Effect.NONE


def test_twilio_callbacks_and_inbound_keywords() -> None:
    delivered = receipts.twilio_receipt(
        {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+1"}, "n1"
    )
    assert (delivered.event_id, delivered.status, delivered.notification_id) == (
        "SM1:delivered",
        S.DELIVERED,
        "n1",
    )
    unreachable = receipts.twilio_receipt(
        {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30005"}
    )
    assert unreachable.status is S.BOUNCED and unreachable.error_code == "twilio_30005"
    carrier = receipts.twilio_receipt(
        {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30008"}
    )
    assert carrier.status is S.FAILED
    stop = receipts.twilio_receipt(
        {"MessageSid": "SM2", "SmsStatus": "received", "From": "+1555", "OptOutType": "STOP"}
    )
    assert (stop.effect, stop.destination) == (receipts.Effect.SUPPRESS, "+1555")
    start = receipts.twilio_receipt({"MessageSid": "SM3", "OptOutType": "START", "From": "+1"})
    assert start.effect is receipts.Effect.UNSUPPRESS


def test_addresses_are_validated_normalised_and_masked() -> None:
    strict = AddressRules(allow_test_domains=False, strict_phone=True)
    dev = AddressRules(allow_test_domains=True, strict_phone=False)
    recipient = Recipient(email="Ada.L@EXAMPLE.com", phone="+1 (615) 555-0100")
    assert destination_for(Channel.EMAIL, recipient, strict) == "Ada.L@example.com"
    assert destination_for(Channel.SMS, Recipient(phone="+16155550100"), strict) == "+16155550100"
    with pytest.raises(BadAddress):
        destination_for(Channel.EMAIL, Recipient(email="a@shop.test"), strict)
    assert destination_for(Channel.EMAIL, Recipient(email="a@shop.test"), dev) == "a@shop.test"
    with pytest.raises(BadAddress):
        normalise_phone("+15551230001", strict)  # a 555 fiction number: not assigned
    assert normalise_phone("+15551230001", dev) == "+15551230001"
    with pytest.raises(BadAddress) as info:
        destination_for(Channel.SMS, Recipient(phone="+1555"), dev)
    assert info.value.violations[0].field == "recipient.phone"
    assert mask_email("ada@example.com") == "a***@example.com"
    assert mask_phone("+16155550100") == "+1******0100"


def test_unsubscribe_tokens_are_tamper_proof() -> None:
    secret = b"s" * 32
    notification_id = uuid.uuid4()
    token = unsubscribe.token_for(secret, notification_id)
    assert len(token) == 43 and unsubscribe.verify(secret, token) == notification_id
    assert unsubscribe.verify(b"t" * 32, token) is None
    # Every other last character: some change only the encoding's unused low bits (a
    # non-canonical spelling of the same bytes), the rest change the MAC; all are refused.
    for last in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if last != token[-1]:
            assert unsubscribe.verify(secret, token[:-1] + last) is None, last
    flipped = ("A" if token[0] != "A" else "B") + token[1:]
    assert unsubscribe.verify(secret, flipped) is None
    other = uuid.uuid4()
    forged = unsubscribe.token_for(secret, other)[:22] + token[22:]
    assert unsubscribe.verify(secret, forged) is None
    assert unsubscribe.verify(secret, "!!!") is None and unsubscribe.verify(secret, "") is None
