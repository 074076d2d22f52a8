"""Field mappings (domain/mappings.py): exact money conversion by ISO 4217 exponent, checks of
a mapping set when it is stored, per-record errors when it is applied, the inverse for pulls,
and the default mapping of every provider and entity type."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from integration_service.domain import mappings as mp
from integration_service.domain.catalog import CATALOG
from integration_service.domain.mappings import FieldMapping as M
from integration_service.domain.mappings import MappingError, Transform
from integration_service.domain.model import EntityType, Provider

P, C, INV = EntityType.PRODUCT, EntityType.CUSTOMER, EntityType.INVENTORY
PAY, REF = EntityType.PAYMENT, EntityType.REFUND

TICKET = {
    "id": "tt-ga-0001",
    "name": "  General Admission ",
    "description": "Standing",
    "price": {"amount_minor": 1999, "currency": "USD"},
    "venue_id": "venue-1",
    "event": {
        "id": "ev-1",
        "name": "The Band",
        "starts_at": datetime(2026, 9, 1, 19, 30, tzinfo=UTC),
    },
}
SALE = {
    "id": "0b9a4f9e-1c1e-4c55-9f0e-6f2d7f3b8a11",
    "payment_id": "0b9a4f9e-1c1e-4c55-9f0e-6f2d7f3b8a11",
    "venue_id": "venue-1",
    "occurred_at": datetime(2026, 5, 1, 2, 0, tzinfo=UTC),
    "amount": {"amount_minor": 4250, "currency": "USD"},
    "lines": [
        {
            "ticket_type_id": "tt-ga-0001",
            "description": "General Admission",
            "quantity": 2,
            "unit_price": {"amount_minor": 2125, "currency": "USD"},
        }
    ],
    "description": "Order 42",
    "customer": {"email": "Ada@Example.com", "name": "Ada Lovelace"},
}


# -- money ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1999, "USD", "19.99"),
        (5, "EUR", "0.05"),
        (0, "GBP", "0.00"),
        (-1999, "USD", "-19.99"),
        (500, "JPY", "500"),
        (1234, "KWD", "1.234"),
        (10000, "CLF", "1.0000"),
        (2**62, "USD", "46116860184273879.04"),
    ],
)
def test_minor_units_become_a_decimal_string_with_the_currency_exponent_and_back(
    minor: int, currency: str, text: str
) -> None:
    assert mp.minor_to_decimal(minor, currency) == text
    assert mp.decimal_to_minor(text, currency) == minor


def test_decimal_to_minor_is_exact_or_refused() -> None:
    assert mp.decimal_to_minor("19.9", "USD") == 1990
    assert mp.decimal_to_minor(Decimal("3"), "USD") == 300
    assert mp.decimal_to_minor(7, "JPY") == 7
    for bad, currency in [
        ("19.999", "USD"),  # a fraction of a cent
        ("1.5", "JPY"),  # yen have no minor unit
        ("1e3", "USD"),
        ("", "USD"),
        ("12,00", "EUR"),
        ("1.00", "usd"),
        ("1.00", "DOLLARS"),
    ]:
        with pytest.raises(mp.MoneyFormatError):
            mp.decimal_to_minor(bad, currency)
    with pytest.raises(mp.MoneyFormatError):
        mp.decimal_to_minor(19.99, "USD")  # type: ignore[arg-type]  # floats are never money
    with pytest.raises(mp.MoneyFormatError):
        mp.minor_to_decimal(True, "USD")


# -- defaults ---------------------------------------------------------------------------------


def test_every_default_mapping_is_valid_and_covers_a_synced_entity() -> None:
    for (provider, entity), mappings in mp.DEFAULTS.items():
        assert entity in {c.entity_type for c in CATALOG[provider].capabilities}
        assert all(m.entity is entity for m in mappings)
        assert mp.validate(mappings, provider) == [], (provider, entity)


def test_every_pushed_provider_entity_has_a_default_mapping() -> None:
    pushed = {
        (provider, c.entity_type) for provider, spec in CATALOG.items() for c in spec.capabilities
    }
    assert pushed == set(mp.DEFAULTS) == set(mp.PROVIDER_FIELDS)


def test_default_square_product_is_an_item_with_one_priced_variation() -> None:
    fields = mp.map_record([], Provider.SQUARE, P, TICKET)
    assert fields == {
        "item_data": {"name": "General Admission", "description": "Standing"},
        "item_variation_data": {
            "name": "General Admission",
            "sku": "tt-ga-0001",
            "price_money": {"amount": 1999, "currency": "USD"},
        },
    }


def test_default_quickbooks_item_has_a_decimal_price_and_the_constant_account() -> None:
    fields = mp.map_record([], Provider.QUICKBOOKS, P, TICKET)
    assert fields == {
        "Name": "General Admission",
        "Description": "Standing",
        "Sku": "tt-ga-0001",
        "UnitPrice": "19.99",
        "Type": "Service",
        "IncomeAccountRef": {"value": "1"},
    }
    yen = {**TICKET, "price": {"amount_minor": 3000, "currency": "JPY"}}
    assert mp.map_record([], Provider.QUICKBOOKS, P, yen)["UnitPrice"] == "3000"  # type: ignore[index]


def test_default_stripe_product_and_event_metadata() -> None:
    fields = mp.map_record([], Provider.STRIPE, P, TICKET)
    assert fields == {
        "name": "General Admission",
        "description": "Standing",
        "default_price_data": {"unit_amount": 1999, "currency": "usd"},
        "metadata": {"event_id": "ev-1", "starts_at": "2026-09-01T19:30:00Z"},
    }


def test_default_quickbooks_sales_receipt() -> None:
    fields = mp.map_record([], Provider.QUICKBOOKS, PAY, SALE)
    assert fields == {
        "PrivateNote": SALE["id"],
        "TxnDate": "2026-05-01",
        "CurrencyRef": {"value": "USD"},
        "TotalAmt": "42.50",
        "Line": SALE["lines"],
        "BillEmail": {"Address": "ada@example.com"},
        "CustomerMemo": {"value": "Order 42"},
        "DepositToAccountRef": {"value": "3"},
    }


def test_default_mailchimp_member_status_follows_marketing_consent() -> None:
    buyer = {"id": "u1", "email": "Ada@Example.com", "given_name": "Ada", "marketing_consent": True}
    assert mp.map_record([], Provider.MAILCHIMP, C, buyer) == {
        "email_address": "ada@example.com",
        "status": "subscribed",
        "merge_fields": {"FNAME": "Ada"},
    }
    no = mp.map_record([], Provider.MAILCHIMP, C, {**buyer, "marketing_consent": False})
    assert no["status"] == "transactional"  # type: ignore[index]
    unknown = mp.map_record([], Provider.MAILCHIMP, C, {**buyer, "marketing_consent": None})
    assert unknown["status"] == "transactional"  # type: ignore[index]


def test_square_customer_phone_is_normalised_to_e164_and_a_bad_one_fails_the_record() -> None:
    buyer = {"id": "u1", "email": "a@example.com", "phone": "+1 (615) 555-0100"}
    fields = mp.map_record([], Provider.SQUARE, C, buyer)
    assert isinstance(fields, dict) and fields["phone_number"] == "+16155550100"
    failed = mp.map_record([], Provider.SQUARE, C, {**buyer, "phone": "call me"})
    assert isinstance(failed, MappingError)
    assert (failed.code, failed.field, failed.retryable) == ("bad_value", "phone", False)


def test_square_inventory_count_is_a_string_quantity() -> None:
    level = {"product_id": "tt-1", "remaining": 42, "updated_at": "2026-05-01T12:00:00+02:00"}
    assert mp.map_record([], Provider.SQUARE, INV, level) == {
        "quantity": "42",
        "occurred_at": "2026-05-01T10:00:00Z",
    }


# -- validation -------------------------------------------------------------------------------


def _fields(violations: list[mp.Violation]) -> list[str]:
    return [v.field for v in violations]


def test_a_valid_custom_set_passes() -> None:
    custom = [
        M(P, "event.name", "Name", Transform.UPPERCASE, required=True),
        M(P, "price", "UnitPrice", Transform.MINOR_TO_DECIMAL),
        M(P, "", "IncomeAccountRef.value", Transform.CONSTANT, constant="2"),
        M(P, "event.starts_at", "Description", Transform.DATE_FORMAT, date_format="%d/%m/%Y"),
    ]
    assert mp.validate(custom, Provider.QUICKBOOKS) == []


def test_unknown_fields_are_named_with_their_request_path() -> None:
    found = mp.validate(
        [
            M(P, "nmae", "Name"),
            M(P, "name", "Title"),
            M(P, "", "IncomeAccountRef.value", Transform.CONSTANT, constant="1"),
        ],
        Provider.QUICKBOOKS,
    )
    assert _fields(found) == ["mappings[0].internal_field", "mappings[1].external_field"]
    assert "'nmae'" in found[0].description and "known:" in found[0].description
    assert "no PRODUCT field 'Title'" in found[1].description


def test_incompatible_types_are_refused() -> None:
    found = mp.validate(
        [
            M(P, "name", "Name"),
            M(P, "price", "UnitPrice"),  # money into a decimal field without the transform
            M(P, "name", "Sku", Transform.MINOR_TO_DECIMAL),  # the transform cannot take text
            M(P, "", "IncomeAccountRef.value", Transform.CONSTANT, constant="1"),
        ],
        Provider.QUICKBOOKS,
    )
    assert _fields(found) == ["mappings[1].external_field", "mappings[2].transform"]
    assert "use minor_to_decimal" in found[0].description
    square = mp.validate(
        [
            M(P, "name", "item_data.name"),
            M(P, "name", "item_variation_data.price_money.amount"),  # text into an integer
            M(P, "event.starts_at", "item_variation_data.price_money.currency"),
        ],
        Provider.SQUARE,
    )
    assert _fields(square) == ["mappings[1].external_field", "mappings[2].external_field"]


def test_minor_to_decimal_needs_an_amount_with_a_currency() -> None:
    found = mp.validate(
        [M(INV, "remaining", "quantity", Transform.MINOR_TO_DECIMAL)], Provider.SQUARE
    )
    assert _fields(found) == ["mappings[0].transform"]
    assert (
        mp.validate(
            [
                M(P, "name", "Name"),
                M(P, "price.amount_minor", "UnitPrice", Transform.MINOR_TO_DECIMAL),
                M(P, "", "IncomeAccountRef.value", Transform.CONSTANT, constant="1"),
            ],
            Provider.QUICKBOOKS,
        )
        == []
    )


def test_entities_the_provider_does_not_sync_duplicates_and_unmapped_required_fields() -> None:
    found = mp.validate(
        [
            M(P, "name", "email_address"),  # Mailchimp syncs customers only
            M(C, "email", "email_address"),
            M(C, "given_name", "email_address"),
        ],
        Provider.MAILCHIMP,
    )
    assert _fields(found) == ["mappings[0].entity_type", "mappings[2].external_field"]
    missing = mp.validate([M(C, "given_name", "merge_fields.FNAME")], Provider.MAILCHIMP)
    assert _fields(missing) == ["mappings"]
    assert "'email_address'" in missing[0].description


def test_constants_defaults_formats_zones_and_lookups_are_checked() -> None:
    found = mp.validate(
        [
            M(P, "name", "item_data.name"),
            M(P, "", "item_variation_data.price_money.amount", Transform.CONSTANT, constant="x"),
            M(P, "", "item_variation_data.price_money.currency", Transform.CONSTANT, constant="$"),
            M(P, "event.starts_at", "item_data.description", Transform.DATE_FORMAT),
            M(
                P,
                "event.starts_at",
                "item_variation_data.name",
                Transform.DATE_FORMAT,
                date_format="%Y %Q",
            ),
            M(P, "name", "item_variation_data.sku", Transform.LOOKUP),
        ],
        Provider.SQUARE,
    )
    assert _fields(found) == [
        "mappings[1].constant_value",
        "mappings[2].constant_value",
        "mappings[3].date_format",
        "mappings[4].date_format",
        "mappings[5].lookup",
    ]
    zone = mp.validate(
        [
            M(
                PAY,
                "occurred_at",
                "TxnDate",
                Transform.DATE_FORMAT,
                date_format="%Y-%m-%d",
                time_zone="Mars/Olympus",
            ),
            M(PAY, "lines", "Line"),
            M(PAY, "amount", "TotalAmt", Transform.MINOR_TO_DECIMAL, default="ten"),
        ],
        Provider.QUICKBOOKS,
    )
    assert _fields(zone) == ["mappings[0].time_zone", "mappings[2].default_value"]


# -- applying ---------------------------------------------------------------------------------


def test_a_required_empty_field_fails_the_record_and_a_default_or_fix_delivers_it() -> None:
    strict = [M(P, "description", "Description", required=True), M(P, "name", "Name")]
    nameless = {**TICKET, "description": "   "}
    failed = mp.apply(strict, nameless)
    assert failed == MappingError(
        "required_field_empty", "description", "description is empty and required for Description"
    )
    fixed = [M(P, "description", "Description", default="Ticket"), M(P, "name", "Name")]
    assert mp.apply(fixed, nameless) == {"Description": "Ticket", "Name": "  General Admission "}
    optional = [M(P, "description", "Description", Transform.TRIM)]
    assert mp.apply(optional, nameless) == {}


def test_lookup_tables_with_and_without_a_default() -> None:
    table = {"USD": "United States dollar", "EUR": "Euro"}
    strict = [M(P, "price.currency", "Description", Transform.LOOKUP, lookup=table)]
    assert mp.apply(strict, TICKET) == {"Description": "United States dollar"}
    pounds = {**TICKET, "price": {"amount_minor": 1, "currency": "GBP"}}
    miss = mp.apply(strict, pounds)
    assert isinstance(miss, MappingError) and miss.code == "lookup_miss"
    lenient = [M(P, "price.currency", "Description", Transform.LOOKUP, lookup=table, default="?")]
    assert mp.apply(lenient, pounds) == {"Description": "?"}


def test_dates_are_formatted_in_the_mapping_time_zone() -> None:
    new_york = [
        M(
            PAY,
            "occurred_at",
            "TxnDate",
            Transform.DATE_FORMAT,
            date_format="%Y-%m-%d",
            time_zone="America/New_York",
        )
    ]
    # 02:00 UTC on 1 May is still 30 April in New York.
    assert mp.apply(new_york, SALE) == {"TxnDate": "2026-04-30"}
    assert mp.apply(
        [M(PAY, "occurred_at", "TxnDate", Transform.DATE_FORMAT, date_format="%Y-%m-%d")], SALE
    ) == {"TxnDate": "2026-05-01"}
    naive = mp.apply(
        [M(PAY, "occurred_at", "PrivateNote", Transform.DATE_ISO8601)],
        {**SALE, "occurred_at": "2026-05-01T02:00:00"},
    )
    assert isinstance(naive, MappingError) and naive.code == "bad_value"


def test_a_string_longer_than_the_provider_takes_fails_the_record() -> None:
    long_name = {**TICKET, "name": "x" * 101}
    failed = mp.map_record([], Provider.QUICKBOOKS, P, long_name)
    assert isinstance(failed, MappingError) and failed.code == "too_long"


def test_stored_mappings_replace_the_default_for_their_entity_only() -> None:
    stored = [
        M(P, "event.name", "Name", required=True),
        M(P, "", "IncomeAccountRef.value", Transform.CONSTANT, constant="2"),
    ]
    assert mp.map_record(stored, Provider.QUICKBOOKS, P, TICKET) == {
        "Name": "The Band",
        "IncomeAccountRef": {"value": "2"},
    }
    assert mp.effective(stored, Provider.QUICKBOOKS, C) == list(
        mp.DEFAULTS[(Provider.QUICKBOOKS, C)]
    )
    nothing = mp.map_record([], Provider.MAILCHIMP, P, TICKET)
    assert isinstance(nothing, MappingError) and nothing.code == "no_mapping"


def test_inbound_applies_the_inverse_transforms() -> None:
    item = {
        "Id": "19",
        "Name": "General Admission",
        "Description": "Standing",
        "Sku": "tt-ga-0001",
        "UnitPrice": "19.99",
        "Type": "Service",
        "IncomeAccountRef": {"value": "1"},
    }
    ours = mp.apply_inbound(mp.DEFAULTS[(Provider.QUICKBOOKS, P)], item, currency="USD")
    assert ours == {
        "name": "General Admission",
        "description": "Standing",
        "id": "tt-ga-0001",
        "price": {"amount_minor": 1999, "currency": "USD"},
    }
    member = {"email_address": "ada@example.com", "status": "subscribed"}
    back = mp.apply_inbound(mp.DEFAULTS[(Provider.MAILCHIMP, C)], member, currency="USD")
    assert back == {"email": "ada@example.com", "marketing_consent": True}  # a bool, as ours
    gone = {"email_address": "bo@example.com", "status": "unsubscribed"}
    assert mp.apply_inbound(mp.DEFAULTS[(Provider.MAILCHIMP, C)], gone, currency="USD") == {
        "email": "bo@example.com",
        "marketing_consent": False,  # a status we never write reads as the default's meaning
    }
    count = {"quantity": "12", "occurred_at": "2026-05-01T10:00:00Z"}
    assert mp.apply_inbound(mp.DEFAULTS[(Provider.SQUARE, INV)], count, currency="USD") == {
        "remaining": 12,  # Square's decimal string, our INT
        "updated_at": "2026-05-01T10:00:00Z",
    }
    bad = mp.apply_inbound(mp.DEFAULTS[(Provider.SQUARE, INV)], {"quantity": "1.5"}, currency="USD")
    assert isinstance(bad, MappingError) and bad.code == "bad_value"
    odd = [M(C, "marketing_consent", "consent")]
    assert mp.apply_inbound(odd, {"consent": "maybe"}, currency="USD") == MappingError(
        "bad_value", "consent", "consent → marketing_consent: 'maybe' is not a boolean"
    )
    dated = [M(PAY, "occurred_at", "TxnDate", Transform.DATE_FORMAT, date_format="%Y-%m-%d")]
    assert mp.apply_inbound(dated, {"TxnDate": "2026-05-01"}, currency="USD") == {
        "occurred_at": "2026-05-01T00:00:00Z"
    }
    fractional = mp.apply_inbound(
        mp.DEFAULTS[(Provider.QUICKBOOKS, P)], {**item, "UnitPrice": "19.999"}, currency="USD"
    )
    assert isinstance(fractional, MappingError) and fractional.field == "UnitPrice"


def test_split_name() -> None:
    assert mp.split_name("Ada King Lovelace") == ("Ada King", "Lovelace")
    assert mp.split_name(" Cher ") == ("Cher", "")
    assert mp.split_name("") == ("", "")
