"""Destinations: validated and normalised (email-validator, phonenumbers), and masked for display.

Validation is syntax only (no DNS: the request path must not wait on the network, and a domain
without mail servers shows up as a bounce anyway). Outside production, addresses on the reserved
test domains (`*.test`, ...) and "possible" but unassigned numbers (555 numbers) are accepted, so
dev and tests can use them; production requires numbers phonenumbers knows to be valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from notify_service.domain.errors import BadAddress, Violation
from notify_service.domain.model import Channel, Recipient


@dataclass(frozen=True, slots=True)
class AddressRules:
    allow_test_domains: bool = False
    """Accept reserved test domains such as `example.test` (dev and tests)."""
    strict_phone: bool = True
    """Require numbers that are valid (assigned ranges), not merely possible."""


def normalise_email(address: str, rules: AddressRules, field: str = "recipient.email") -> str:
    try:
        checked = validate_email(
            address, check_deliverability=False, test_environment=rules.allow_test_domains
        )
    except EmailNotValidError as exc:
        raise BadAddress([Violation(field, f"not a valid email address: {exc}")]) from None
    return str(checked.normalized)


def normalise_phone(number: str, rules: AddressRules, field: str = "recipient.phone") -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise BadAddress([Violation(field, "not a phone number in E.164 format")]) from None
    ok = (
        phonenumbers.is_valid_number(parsed)
        if rules.strict_phone
        else phonenumbers.is_possible_number(parsed)
    )
    if not ok:
        raise BadAddress([Violation(field, "not a valid phone number")])
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def destination_for(channel: Channel, recipient: Recipient, rules: AddressRules) -> str:
    """The normalised destination of `recipient` on `channel` (BadAddress when missing/bad)."""
    if channel is Channel.EMAIL:
        if not recipient.email:
            raise BadAddress([Violation("recipient.email", "required for CHANNEL_EMAIL")])
        return normalise_email(recipient.email, rules)
    if channel is Channel.SMS:
        if not recipient.phone:
            raise BadAddress([Violation("recipient.phone", "required for CHANNEL_SMS")])
        return normalise_phone(recipient.phone, rules)
    if not recipient.push_token:
        raise BadAddress([Violation("recipient.push_token", "required for CHANNEL_PUSH")])
    return recipient.push_token


def mask_email(address: str) -> str:
    """`a***@example.com`: the first character of the local part and the domain."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def mask_phone(number: str) -> str:
    """`+1******0100`: the country prefix (two characters) and the last four digits."""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:2] + "*" * (len(number) - 6) + number[-4:]


def mask(channel: Channel, destination: str) -> str:
    if channel is Channel.EMAIL:
        return mask_email(destination)
    if channel is Channel.SMS:
        return mask_phone(destination)
    return destination[:4] + "***" if len(destination) > 8 else "***"
