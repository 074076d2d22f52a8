"""Field mappings: how one of our records becomes a provider's record (PUSH) and back (PULL).

A mapping set is a list of `FieldMapping`s per connection and entity type, each taking one
internal field path (e.g. ``price``, ``customer.email``) to one provider field path (e.g.
``UnitPrice``, ``merge_fields.FNAME``) through a `Transform` from a fixed list (no code is ever
evaluated). Paths are dotted; the mapped record is built as nested dicts from them.

Both sides have a typed schema (`INTERNAL[entity]`, `PROVIDER_FIELDS[(provider, entity)]`):

* `validate(mappings, provider)` checks a set when it is stored: unknown internal or provider
  field, a type the transform cannot take or the provider field cannot hold, a bad constant,
  lookup table or date format, an entity the provider does not sync, a provider field mapped
  twice, a field the provider requires left unmapped → `Violation`s (INVALID_ARGUMENT; nothing
  is stored);
* `apply(mappings, record)` maps one record for a writer: a value that is required but empty,
  a lookup miss without a default, or a value that does not parse is that record's
  `MappingError` (a value, not an exception): the engine dead-letters it and goes on;
* `apply_inbound(mappings, fields, currency=...)` maps a provider record read by a reader back
  to our fields with the inverse transforms (constants are not read back);
* `DEFAULTS[(provider, entity)]` is the mapping used while a connection stores none.

Values handed to writers are JSON-ready: strings, ints, bools, lists and dicts; timestamps as
RFC 3339 in UTC (``2026-05-01T12:00:00Z``), dates as ``YYYY-MM-DD``, decimals as strings
(``"19.99"``). Money is integer minor units on our side; `minor_to_decimal` and
`decimal_to_minor` convert with the currency's ISO 4217 exponent using integers and `Decimal`
only (never floats), and refuse amounts that do not fit the exponent exactly.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from integration_service.domain.catalog import CATALOG
from integration_service.domain.errors import Violation
from integration_service.domain.model import EntityType, Provider

# -- money ------------------------------------------------------------------------------------

_EXPONENT_0 = ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG")
_EXPONENT_0_MORE = ("RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF")
CURRENCY_EXPONENTS: Mapping[str, int] = {
    **dict.fromkeys(_EXPONENT_0 + _EXPONENT_0_MORE, 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
"""ISO 4217 minor-unit exponents other than 2 (every other currency code has 2)."""

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


class MoneyFormatError(ValueError):
    """An amount or currency that cannot be converted exactly."""


def exponent(currency: str) -> int:
    """The ISO 4217 minor-unit exponent of `currency` (``USD`` 2, ``JPY`` 0, ``KWD`` 3)."""
    if not _CURRENCY.match(currency):
        raise MoneyFormatError(f"not an ISO 4217 currency code: {currency!r}")
    return CURRENCY_EXPONENTS.get(currency, 2)


def minor_to_decimal(amount_minor: int, currency: str) -> str:
    """``1999, "USD"`` → ``"19.99"``; ``500, "JPY"`` → ``"500"``; integers only."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise MoneyFormatError(f"minor units must be an integer, not {amount_minor!r}")
    exp = exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(amount_minor), 10**exp)
    return f"{sign}{major}" + (f".{minor:0{exp}d}" if exp else "")


def decimal_to_minor(value: str | int | Decimal, currency: str) -> int:
    """``"19.99", "USD"`` → ``1999``; exact or refused (``"19.999"`` USD is an error)."""
    exp = exponent(currency)
    if isinstance(value, bool | float):
        raise MoneyFormatError(f"not an exact decimal: {value!r}")
    text = str(value).strip()
    if not _DECIMAL.match(text):
        raise MoneyFormatError(f"not a decimal amount: {text!r}")
    try:
        scaled = Decimal(text).scaleb(exp)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid numbers
        raise MoneyFormatError(f"not a decimal amount: {text!r}") from exc
    if scaled != scaled.to_integral_value():
        raise MoneyFormatError(f"{text} {currency} has more than {exp} decimal places")
    return int(scaled)


# -- types and schemas ------------------------------------------------------------------------


class FieldType(enum.StrEnum):
    """What a field holds. MONEY is ``{"amount_minor": int, "currency": str}`` on our side."""

    STRING = "string"
    INT = "int"
    BOOL = "bool"
    MONEY = "money"
    CURRENCY = "currency"
    DECIMAL = "decimal"
    """A decimal number as a string, e.g. ``"19.99"``."""
    TIMESTAMP = "timestamp"
    DATE = "date"
    LIST = "list"
    """A list of line dicts (transactions' lines), copied as is."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    type: FieldType
    required: bool = False
    """Provider side: the provider refuses a record without it, so a stored set for the entity
    must map it."""
    max_length: int = 0
    """Provider side: longer strings are refused by the provider (0 = no limit we know)."""


S = FieldSpec
STRING, INT, BOOL = S(FieldType.STRING), S(FieldType.INT), S(FieldType.BOOL)
MONEY, CURRENCY, DECIMAL = S(FieldType.MONEY), S(FieldType.CURRENCY), S(FieldType.DECIMAL)
TIMESTAMP, DATE, LIST = S(FieldType.TIMESTAMP), S(FieldType.DATE), S(FieldType.LIST)

_CUSTOMER_OF_TXN = {
    "customer.id": STRING,
    "customer.email": STRING,
    "customer.name": STRING,
    "customer.given_name": STRING,
    "customer.family_name": STRING,
}
_TRANSACTION = {
    "id": STRING,
    "payment_id": STRING,
    "venue_id": STRING,
    "event_id": STRING,
    "order_id": STRING,
    "occurred_at": TIMESTAMP,
    "amount": MONEY,
    "fees": MONEY,
    "lines": LIST,
    "description": STRING,
    "provider_reference": STRING,
    **_CUSTOMER_OF_TXN,
}

INTERNAL: Mapping[EntityType, Mapping[str, FieldSpec]] = {
    # A ticket type of one of the venue's events (IngestCatalog): id = ticket_type_id.
    EntityType.PRODUCT: {
        "id": STRING,
        "name": STRING,
        "description": STRING,
        "price": MONEY,
        "venue_id": STRING,
        "event.id": STRING,
        "event.name": STRING,
        "event.description": STRING,
        "event.starts_at": TIMESTAMP,
        "event.venue_name": STRING,
    },
    # Remaining tickets of a ticket type (IngestInventory): product_id = ticket_type_id.
    EntityType.INVENTORY: {
        "product_id": STRING,
        "remaining": INT,
        "updated_at": TIMESTAMP,
    },
    # A buyer who consented (RecordTransaction's buyer_contact): given_name / family_name are
    # the name split at its last space when only a full name is known (`split_name`).
    EntityType.CUSTOMER: {
        "id": STRING,
        "email": STRING,
        "name": STRING,
        "given_name": STRING,
        "family_name": STRING,
        "phone": STRING,
        "marketing_consent": BOOL,
        "venue_id": STRING,
        "created_at": TIMESTAMP,
    },
    # A sale (RecordTransaction SALE): id = payment id; lines = [{"ticket_type_id",
    # "description", "quantity", "unit_price": MONEY}].
    EntityType.PAYMENT: {**_TRANSACTION, "lines": LIST},
    # A refund (RecordTransaction REFUND): id = refund id, payment_id = the refunded payment.
    EntityType.REFUND: {**_TRANSACTION, "reason": STRING},
}
"""Our records as the engine reads them from the mirror, per entity type. A MONEY field's
parts are addressable too (``price.amount_minor`` INT, ``price.currency`` CURRENCY)."""


def _qb_customer() -> dict[str, FieldSpec]:
    return {
        "DisplayName": S(FieldType.STRING, required=True, max_length=500),
        "GivenName": S(FieldType.STRING, max_length=100),
        "FamilyName": S(FieldType.STRING, max_length=100),
        "PrimaryEmailAddr.Address": S(FieldType.STRING, max_length=100),
        "PrimaryPhone.FreeFormNumber": S(FieldType.STRING, max_length=30),
        "Notes": S(FieldType.STRING, max_length=2000),
    }


def _qb_receipt() -> dict[str, FieldSpec]:
    return {
        "DocNumber": S(FieldType.STRING, max_length=21),
        "TxnDate": DATE,
        "PrivateNote": S(FieldType.STRING, max_length=4000),
        "CurrencyRef.value": CURRENCY,
        "TotalAmt": DECIMAL,
        "Line": S(FieldType.LIST, required=True),
        "BillEmail.Address": S(FieldType.STRING, max_length=100),
        "CustomerMemo.value": S(FieldType.STRING, max_length=1000),
    }


PROVIDER_FIELDS: Mapping[tuple[Provider, EntityType], Mapping[str, FieldSpec]] = {
    # Square ITEM with one ITEM_VARIATION (the writer nests the variation in the item).
    (Provider.SQUARE, EntityType.PRODUCT): {
        "item_data.name": S(FieldType.STRING, required=True, max_length=512),
        "item_data.description": S(FieldType.STRING, max_length=4096),
        "item_variation_data.name": S(FieldType.STRING, max_length=255),
        "item_variation_data.sku": S(FieldType.STRING, max_length=255),
        "item_variation_data.price_money.amount": INT,
        "item_variation_data.price_money.currency": CURRENCY,
    },
    (Provider.SQUARE, EntityType.CUSTOMER): {
        "given_name": S(FieldType.STRING, max_length=300),
        "family_name": S(FieldType.STRING, max_length=300),
        "email_address": S(FieldType.STRING, max_length=254),
        "phone_number": S(FieldType.STRING, max_length=32),
        "reference_id": S(FieldType.STRING, max_length=100),
        "note": STRING,
    },
    # One PHYSICAL_COUNT per item variation (the writer finds the variation via the id map).
    (Provider.SQUARE, EntityType.INVENTORY): {
        "quantity": S(FieldType.STRING, required=True),
        "occurred_at": TIMESTAMP,
    },
    (Provider.STRIPE, EntityType.PRODUCT): {
        "name": S(FieldType.STRING, required=True, max_length=250),
        "description": STRING,
        "unit_label": S(FieldType.STRING, max_length=12),
        "default_price_data.unit_amount": INT,
        "default_price_data.currency": CURRENCY,
        "metadata.event_id": S(FieldType.STRING, max_length=500),
        "metadata.starts_at": S(FieldType.STRING, max_length=500),
    },
    (Provider.QUICKBOOKS, EntityType.PRODUCT): {
        "Name": S(FieldType.STRING, required=True, max_length=100),
        "Description": S(FieldType.STRING, max_length=4000),
        "Sku": S(FieldType.STRING, max_length=100),
        "UnitPrice": DECIMAL,
        "Type": STRING,
        "IncomeAccountRef.value": S(FieldType.STRING, required=True),
    },
    (Provider.QUICKBOOKS, EntityType.CUSTOMER): _qb_customer(),
    (Provider.QUICKBOOKS, EntityType.PAYMENT): {
        **_qb_receipt(),
        "DepositToAccountRef.value": STRING,
    },
    (Provider.QUICKBOOKS, EntityType.REFUND): {
        **_qb_receipt(),
        "DepositToAccountRef.value": S(FieldType.STRING, required=True),
    },
    (Provider.MAILCHIMP, EntityType.CUSTOMER): {
        "email_address": S(FieldType.STRING, required=True, max_length=254),
        "status": STRING,
        "merge_fields.FNAME": STRING,
        "merge_fields.LNAME": STRING,
        "merge_fields.PHONE": STRING,
        "language": STRING,
    },
}
"""The provider fields a mapping may write, per provider and entity type."""


def split_name(name: str) -> tuple[str, str]:
    """A full name as (given name, family name): split at the last space ("Ada King Lovelace"
    → ("Ada King", "Lovelace")); a single word is a given name."""
    given, _, family = name.strip().rpartition(" ")
    return (given.strip(), family) if given.strip() else (family, "")


def internal_schema(entity: EntityType) -> dict[str, FieldSpec]:
    """`INTERNAL[entity]` with each MONEY field's parts added."""
    schema = dict(INTERNAL.get(entity, {}))
    for path, spec in list(schema.items()):
        if spec.type is FieldType.MONEY:
            schema[path + ".amount_minor"] = INT
            schema[path + ".currency"] = CURRENCY
    return schema


# -- transforms -------------------------------------------------------------------------------


class Transform(enum.StrEnum):
    COPY = "copy"
    TRIM = "trim"
    LOWERCASE = "lowercase"
    UPPERCASE = "uppercase"
    PHONE_E164 = "phone_e164"
    DATE_ISO8601 = "date_iso8601"
    """A timestamp (or a date, or an RFC 3339 string) → RFC 3339 in UTC."""
    DATE_FORMAT = "date_format"
    """A timestamp or date → a string in `date_format` (strftime subset), in `time_zone`."""
    MINOR_TO_DECIMAL = "minor_to_decimal"
    """MONEY (or its amount_minor) → decimal string with the currency's exponent."""
    DECIMAL_TO_MINOR = "decimal_to_minor"
    """Decimal string → integer minor units (currency: `constant`, else a sibling currency)."""
    CONSTANT = "constant"
    """Writes `constant`, whatever the source (internal_field may be empty)."""
    LOOKUP = "lookup"
    """Looks the value (as a string) up in `lookup`; a miss takes `default` or fails."""


_TEXTUAL = frozenset({FieldType.STRING, FieldType.CURRENCY})
_SCALAR = frozenset(
    {
        FieldType.STRING,
        FieldType.INT,
        FieldType.BOOL,
        FieldType.CURRENCY,
        FieldType.DECIMAL,
        FieldType.DATE,
    }
)
_ACCEPTS: Mapping[Transform, frozenset[FieldType]] = {
    Transform.TRIM: _TEXTUAL,
    Transform.LOWERCASE: _TEXTUAL,
    Transform.UPPERCASE: _TEXTUAL,
    Transform.PHONE_E164: frozenset({FieldType.STRING}),
    Transform.DATE_ISO8601: frozenset({FieldType.TIMESTAMP, FieldType.DATE, FieldType.STRING}),
    Transform.DATE_FORMAT: frozenset({FieldType.TIMESTAMP, FieldType.DATE}),
    Transform.MINOR_TO_DECIMAL: frozenset({FieldType.MONEY, FieldType.INT}),
    Transform.DECIMAL_TO_MINOR: frozenset({FieldType.DECIMAL, FieldType.STRING}),
    Transform.LOOKUP: _SCALAR,
}

# What a target field of each type can hold (the output type of the transform must be one).
_HOLDS: Mapping[FieldType, frozenset[FieldType]] = {
    FieldType.STRING: frozenset(
        {
            FieldType.STRING,
            FieldType.INT,
            FieldType.BOOL,
            FieldType.CURRENCY,
            FieldType.DECIMAL,
            FieldType.TIMESTAMP,
            FieldType.DATE,
        }
    ),
    FieldType.INT: frozenset({FieldType.INT}),
    FieldType.BOOL: frozenset({FieldType.BOOL}),
    FieldType.MONEY: frozenset({FieldType.MONEY}),
    FieldType.CURRENCY: frozenset({FieldType.CURRENCY}),
    FieldType.DECIMAL: frozenset({FieldType.DECIMAL, FieldType.INT}),
    FieldType.TIMESTAMP: frozenset({FieldType.TIMESTAMP}),
    FieldType.DATE: frozenset({FieldType.DATE}),
    FieldType.LIST: frozenset({FieldType.LIST}),
}

_DATE_DIRECTIVES = frozenset("YmdHMSyjbBaAIpz%")
_DATE_LITERALS = re.compile(r"^[\s\-/:.,T]*$")


def _bad_date_format(fmt: str) -> str:
    """Why `fmt` is not an allowed date format ('' when it is)."""
    if not fmt or len(fmt) > 64:
        return "a date format of 1 to 64 characters is needed"
    literal = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            if i + 1 >= len(fmt) or fmt[i + 1] not in _DATE_DIRECTIVES:
                return f"unsupported directive in {fmt!r} (allowed: %Y %m %d %H %M %S …)"
            i += 2
        else:
            literal.append(fmt[i])
            i += 1
    if not _DATE_LITERALS.match("".join(literal)):
        return f"only directives, spaces and - / : . , T are allowed in {fmt!r}"
    return ""


def _format_is_date_only(fmt: str) -> bool:
    return fmt in ("%Y-%m-%d",)


# -- the mapping ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One internal field → one provider field (PUSH), or back (PULL)."""

    entity: EntityType
    internal_field: str
    external_field: str
    transform: Transform = Transform.COPY
    constant: str = ""
    """CONSTANT: the value; DECIMAL_TO_MINOR: the currency (optional)."""
    default: str = ""
    """Written when the source is empty (as the target field's type)."""
    required: bool = False
    """An empty source (and no default) fails the record."""
    lookup: Mapping[str, str] = field(default_factory=dict)
    """LOOKUP: source value → provider value."""
    date_format: str = ""
    """DATE_FORMAT: strftime format (directives %Y %m %d %H %M %S %y %j %b %B %a %A %I %p %z)."""
    time_zone: str = ""
    """DATE_FORMAT: IANA zone the date is shown in (default UTC)."""


@dataclass(frozen=True, slots=True)
class MappingError:
    """Why one record could not be mapped (the engine dead-letters it; not retryable until the
    data or the mapping changes)."""

    code: str
    """``required_field_empty``, ``lookup_miss``, ``bad_value``, ``too_long`` or
    ``no_mapping``."""
    field: str
    """The internal field concerned (PUSH) or the provider field (PULL)."""
    message: str
    retryable: bool = False


def _source_type(entity: EntityType, mapping: FieldMapping) -> FieldType:
    spec = internal_schema(entity).get(mapping.internal_field)
    return spec.type if spec is not None else FieldType.STRING


def _output_type(mapping: FieldMapping, source: FieldType, target: FieldType) -> FieldType:
    t = mapping.transform
    if t in (Transform.COPY, Transform.TRIM, Transform.LOWERCASE, Transform.UPPERCASE):
        return source
    if t is Transform.PHONE_E164:
        return FieldType.STRING
    if t is Transform.DATE_ISO8601:
        return FieldType.TIMESTAMP
    if t is Transform.DATE_FORMAT:
        return FieldType.DATE if _format_is_date_only(mapping.date_format) else FieldType.STRING
    if t is Transform.MINOR_TO_DECIMAL:
        return FieldType.DECIMAL
    if t is Transform.DECIMAL_TO_MINOR:
        return FieldType.INT
    if t is Transform.CONSTANT:
        return target
    return FieldType.STRING  # LOOKUP


def _constant_problem(value: str, target: FieldType) -> str:
    """Why `value` cannot be written to a `target` field ('' when it can)."""
    try:
        _typed_constant(value, target)
    except ValueError as exc:
        return str(exc)
    return ""


def _typed_constant(value: str, target: FieldType) -> Any:
    """A constant or default (stored as text) as a value of the target field's type."""
    if target is FieldType.INT:
        if not re.fullmatch(r"-?\d+", value):
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if target is FieldType.BOOL:
        if value not in ("true", "false"):
            raise ValueError(f"{value!r} is not true or false")
        return value == "true"
    if target is FieldType.DECIMAL:
        if not _DECIMAL.match(value):
            raise ValueError(f"{value!r} is not a decimal number")
        return value
    if target is FieldType.CURRENCY:
        if not _CURRENCY.match(value):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return value
    if target is FieldType.DATE:
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    if target is FieldType.TIMESTAMP:
        return _rfc3339(_parse_timestamp(value))
    if target in (FieldType.MONEY, FieldType.LIST):
        raise ValueError(f"a {target.value} field cannot take a constant")
    return value


def capability_entities(provider: Provider) -> frozenset[EntityType]:
    return frozenset(c.entity_type for c in CATALOG[provider].capabilities)


def validate(mappings: Sequence[FieldMapping], provider: Provider) -> list[Violation]:
    """Every problem of a mapping set for a `provider` connection, as field violations on
    ``mappings[i].<field>`` (the SetFieldMappings request's paths); empty when it is valid."""
    out: list[Violation] = []
    synced = capability_entities(provider)
    seen: dict[tuple[EntityType, str], int] = {}
    for i, m in enumerate(mappings):
        at = f"mappings[{i}]"
        if m.entity not in synced or (provider, m.entity) not in PROVIDER_FIELDS:
            out.append(Violation(f"{at}.entity_type", f"{provider.value} does not sync {m.entity}"))
            continue
        out.extend(_check_one(at, m, provider))
        key = (m.entity, m.external_field)
        if key in seen:
            out.append(
                Violation(
                    f"{at}.external_field",
                    f"{m.external_field!r} is already mapped by mappings[{seen[key]}]",
                )
            )
        else:
            seen[key] = i
    for entity in sorted({m.entity for m in mappings if m.entity in synced}):
        targets = PROVIDER_FIELDS.get((provider, entity), {})
        mapped = {m.external_field for m in mappings if m.entity is entity}
        for name, spec in targets.items():
            if spec.required and name not in mapped:
                out.append(
                    Violation(
                        "mappings",
                        f"{provider.value} needs {name!r} for {entity}: map it (or a constant)",
                    )
                )
    return out


def _check_one(at: str, m: FieldMapping, provider: Provider) -> list[Violation]:
    out: list[Violation] = []
    targets = PROVIDER_FIELDS[(provider, m.entity)]
    target = targets.get(m.external_field)
    if target is None:
        out.append(
            Violation(
                f"{at}.external_field",
                f"{provider.value} has no {m.entity} field {m.external_field!r} "
                f"(known: {', '.join(sorted(targets))})",
            )
        )
    schema = internal_schema(m.entity)
    source: FieldSpec | None = None
    if m.transform is Transform.CONSTANT:
        if m.internal_field and m.internal_field not in schema:
            out.append(Violation(f"{at}.internal_field", f"unknown {m.entity} field"))
        if target is not None and (problem := _constant_problem(m.constant, target.type)):
            out.append(Violation(f"{at}.constant_value", problem))
    else:
        source = schema.get(m.internal_field)
        if source is None:
            out.append(
                Violation(
                    f"{at}.internal_field",
                    f"unknown {m.entity} field {m.internal_field!r} "
                    f"(known: {', '.join(sorted(schema))})",
                )
            )
    if source is not None:
        accepted = _ACCEPTS.get(m.transform)
        if accepted is not None and source.type not in accepted:
            out.append(
                Violation(
                    f"{at}.transform",
                    f"{m.transform.value} cannot take {m.internal_field!r} ({source.type.value})",
                )
            )
        elif (
            m.transform is Transform.MINOR_TO_DECIMAL
            and source.type is FieldType.INT
            and not _is_money_part(m.entity, m.internal_field)
        ):
            out.append(
                Violation(
                    f"{at}.transform",
                    f"minor_to_decimal needs a money amount; {m.internal_field!r} has no currency",
                )
            )
        elif target is not None:
            produced = _output_type(m, source.type, target.type)
            if produced not in _HOLDS[target.type]:
                out.append(
                    Violation(
                        f"{at}.external_field",
                        f"{m.external_field!r} ({target.type.value}) cannot hold "
                        f"{m.internal_field!r} as {produced.value}"
                        + (" (use minor_to_decimal)" if source.type is FieldType.MONEY else ""),
                    )
                )
    if m.transform is Transform.DATE_FORMAT and (problem := _bad_date_format(m.date_format)):
        out.append(Violation(f"{at}.date_format", problem))
    if m.time_zone:
        try:
            ZoneInfo(m.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            out.append(Violation(f"{at}.time_zone", f"unknown time zone {m.time_zone!r}"))
    if m.transform is Transform.LOOKUP and not m.lookup:
        out.append(Violation(f"{at}.lookup", "a lookup mapping needs a table"))
    if m.transform is Transform.DECIMAL_TO_MINOR and m.constant and not _CURRENCY.match(m.constant):
        out.append(Violation(f"{at}.constant_value", "the currency must be an ISO 4217 code"))
    defaulted = m.default and target is not None and m.transform is not Transform.CONSTANT
    if defaulted and target and (problem := _constant_problem(m.default, target.type)):
        out.append(Violation(f"{at}.default_value", problem))
    return out


def _is_money_part(entity: EntityType, path: str) -> bool:
    parent, _, leaf = path.rpartition(".")
    return leaf == "amount_minor" and INTERNAL.get(entity, {}).get(parent) == MONEY


# -- applying ---------------------------------------------------------------------------------


def get_path(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of nested mappings; None when any step is missing."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def set_path(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


class _Bad(ValueError):
    """One value that cannot be mapped (becomes a MappingError)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise _Bad("bad_value", f"{value!r} is not an ISO 8601 timestamp") from None
    else:
        raise _Bad("bad_value", f"{value!r} is not a timestamp")
    if moment.tzinfo is None:
        raise _Bad("bad_value", f"{value!r} has no time zone")
    return moment


def _rfc3339(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _json_ready(value: Any, kind: FieldType) -> Any:
    """A copied value in the form writers send (timestamps RFC 3339, dates ISO)."""
    if kind is FieldType.TIMESTAMP:
        return _rfc3339(_parse_timestamp(value))
    if kind is FieldType.DATE:
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        return str(value)
    if kind is FieldType.MONEY:
        if not isinstance(value, Mapping):
            raise _Bad("bad_value", "not a money value")
        return {"amount_minor": value.get("amount_minor"), "currency": value.get("currency")}
    if kind is FieldType.DECIMAL and isinstance(value, Decimal):
        return str(value)
    return value


def _money_of(record: Mapping[str, Any], path: str, value: Any) -> tuple[int, str]:
    if isinstance(value, Mapping):
        amount, currency = value.get("amount_minor"), value.get("currency")
    else:
        parent = path.rpartition(".")[0]
        amount, currency = value, get_path(record, parent + ".currency") if parent else None
    if isinstance(amount, bool) or not isinstance(amount, int) or not isinstance(currency, str):
        raise _Bad("bad_value", f"{path} is not an amount in minor units with a currency")
    return amount, currency


def _transform(m: FieldMapping, value: Any, source: FieldType, record: Mapping[str, Any]) -> Any:
    t = m.transform
    try:
        if t is Transform.COPY:
            return _json_ready(value, source)
        if t is Transform.TRIM:
            return str(value).strip()
        if t is Transform.LOWERCASE:
            return str(value).lower()
        if t is Transform.UPPERCASE:
            return str(value).upper()
        if t is Transform.PHONE_E164:
            return _e164(str(value))
        if t is Transform.DATE_ISO8601:
            return _rfc3339(_parse_timestamp(value))
        if t is Transform.DATE_FORMAT:
            zone = ZoneInfo(m.time_zone) if m.time_zone else UTC
            return _parse_timestamp(value).astimezone(zone).strftime(m.date_format)
        if t is Transform.MINOR_TO_DECIMAL:
            return minor_to_decimal(*_money_of(record, m.internal_field, value))
        if t is Transform.DECIMAL_TO_MINOR:
            currency = m.constant or _sibling_currency(record, m.internal_field)
            return decimal_to_minor(str(value), currency)
        if t is Transform.LOOKUP:
            key = _lookup_key(value)
            if key in m.lookup:
                return m.lookup[key]
            raise _Bad("lookup_miss", f"{key!r} is not in the lookup table")
    except MoneyFormatError as exc:
        raise _Bad("bad_value", str(exc)) from None
    raise AssertionError(t)  # pragma: no cover - CONSTANT is handled by the caller


def _lookup_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sibling_currency(record: Mapping[str, Any], path: str) -> str:
    parent = path.rpartition(".")[0]
    currency = get_path(record, parent + ".currency" if parent else "currency")
    if not isinstance(currency, str):
        raise _Bad("bad_value", f"no currency for {path}")
    return currency


def _e164(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise _Bad("bad_value", "not a phone number in international form") from None
    if not phonenumbers.is_possible_number(parsed):
        raise _Bad("bad_value", "not a possible phone number")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def apply(
    mappings: Sequence[FieldMapping],
    record: Mapping[str, Any],
    *,
    targets: Mapping[str, FieldSpec] | None = None,
) -> dict[str, Any] | MappingError:
    """One of our records (nested mappings, `INTERNAL` shape) → the provider's fields (nested
    dicts from the external paths), or the record's `MappingError`.

    `mappings` are one entity type's (see `for_entity`). `targets` are the provider's field
    specs (`PROVIDER_FIELDS[...]`, as `map_record` passes them): they type constants and
    defaults and bound string lengths; without them constants stay strings."""
    out: dict[str, Any] = {}
    for m in mappings:
        target_type = (
            targets[m.external_field].type
            if targets and m.external_field in targets
            else FieldType.STRING
        )
        if m.transform is Transform.CONSTANT:
            set_path(out, m.external_field, _typed_constant(m.constant, target_type))
            continue
        source = _source_type(m.entity, m)
        value = get_path(record, m.internal_field)
        if isinstance(value, str) and not value.strip():
            value = ""  # blanks are empty: a required field of spaces fails the record
        if _empty(value):
            if m.default:
                set_path(out, m.external_field, _typed_constant(m.default, target_type))
            elif m.required:
                return MappingError(
                    "required_field_empty",
                    m.internal_field,
                    f"{m.internal_field} is empty and required for {m.external_field}",
                )
            continue
        try:
            mapped = _transform(m, value, source, record)
        except _Bad as bad:
            if bad.code == "lookup_miss" and m.default:
                mapped = _typed_constant(m.default, target_type)
            else:
                return MappingError(
                    bad.code, m.internal_field, f"{m.internal_field} → {m.external_field}: {bad}"
                )
        if target_type is FieldType.STRING and isinstance(mapped, bool | int):
            mapped = _lookup_key(mapped)
        limit = (
            targets[m.external_field].max_length if targets and m.external_field in targets else 0
        )
        if limit and isinstance(mapped, str) and len(mapped) > limit:
            return MappingError(
                "too_long",
                m.internal_field,
                f"{m.external_field} takes at most {limit} characters ({len(mapped)} given)",
            )
        set_path(out, m.external_field, mapped)
    return out


def _inverse(m: FieldMapping, value: Any, currency: str) -> Any:
    t = m.transform
    try:
        if t is Transform.MINOR_TO_DECIMAL:
            amount = decimal_to_minor(str(value), currency)
            if internal_schema(m.entity).get(m.internal_field) == MONEY:
                return {"amount_minor": amount, "currency": currency}
            return amount
        if t is Transform.DECIMAL_TO_MINOR:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Bad("bad_value", f"{value!r} is not an integer amount")
            return minor_to_decimal(value, m.constant or currency)
        if t in (Transform.DATE_ISO8601,):
            return _rfc3339(_parse_timestamp(value))
        if t is Transform.DATE_FORMAT:
            zone = ZoneInfo(m.time_zone) if m.time_zone else UTC
            try:
                moment = datetime.strptime(str(value), m.date_format)
            except ValueError:
                raise _Bad("bad_value", f"{value!r} does not match {m.date_format!r}") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
            return _rfc3339(moment)
        if t is Transform.LOOKUP:
            for ours, theirs in m.lookup.items():
                if theirs == str(value):
                    return ours
            # A provider value we never write (e.g. Mailchimp's "unsubscribed") reads as what
            # the default stands for ("transactional" → no consent), when the table has it.
            for ours, theirs in m.lookup.items():
                if m.default and theirs == m.default:
                    return ours
            raise _Bad("lookup_miss", f"{value!r} is not a value of the lookup table")
    except MoneyFormatError as exc:
        raise _Bad("bad_value", str(exc)) from None
    return value


def _as_internal(kind: FieldType, value: Any) -> Any:
    """An inbound value in the type of our field: lookup keys and provider strings are text
    ("true", "12"), our BOOL and INT fields are not; ISO 4217 codes are ours in upper case
    ("usd" at Stripe)."""
    if kind is FieldType.BOOL and not isinstance(value, bool):
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise _Bad("bad_value", f"{value!r} is not a boolean")
    if kind is FieldType.INT and not isinstance(value, int | bool):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise _Bad("bad_value", f"{value!r} is not an integer") from None
        if not number.is_finite() or number != number.to_integral_value():
            raise _Bad("bad_value", f"{value!r} is not an integer")
        return int(number)
    if kind is FieldType.CURRENCY and isinstance(value, str):
        return value.upper()
    return value


def apply_inbound(
    mappings: Sequence[FieldMapping], fields: Mapping[str, Any], *, currency: str
) -> dict[str, Any] | MappingError:
    """A provider record read by a reader → our fields (nested from the internal paths), with
    the inverse transforms; decimal amounts are read in `currency` (the connection's). Constant
    mappings and mappings without an internal field are not read back."""
    out: dict[str, Any] = {}
    for m in mappings:
        if m.transform is Transform.CONSTANT or not m.internal_field:
            continue
        value = get_path(fields, m.external_field)
        if _empty(value):
            continue
        try:
            mapped = _as_internal(_source_type(m.entity, m), _inverse(m, value, currency))
        except _Bad as bad:
            return MappingError(
                bad.code, m.external_field, f"{m.external_field} → {m.internal_field}: {bad}"
            )
        set_path(out, m.internal_field, mapped)
    return out


def for_entity(mappings: Iterable[FieldMapping], entity: EntityType) -> list[FieldMapping]:
    return [m for m in mappings if m.entity is entity]


def effective(
    stored: Sequence[FieldMapping], provider: Provider, entity: EntityType
) -> list[FieldMapping]:
    """The mappings a sync of `entity` uses: the stored ones for it, else the default."""
    own = for_entity(stored, entity)
    return own if own else list(DEFAULTS.get((provider, entity), ()))


def map_record(
    stored: Sequence[FieldMapping],
    provider: Provider,
    entity: EntityType,
    record: Mapping[str, Any],
) -> dict[str, Any] | MappingError:
    """What the engine calls per record: `apply` with the effective mappings and the
    provider's field types."""
    mappings = effective(stored, provider, entity)
    if not mappings:
        return MappingError("no_mapping", "", f"{provider.value} does not sync {entity}")
    return apply(mappings, record, targets=PROVIDER_FIELDS.get((provider, entity), {}))


# -- defaults ---------------------------------------------------------------------------------

M = FieldMapping
T = Transform
P, C, INV = EntityType.PRODUCT, EntityType.CUSTOMER, EntityType.INVENTORY
PAY, REF = EntityType.PAYMENT, EntityType.REFUND


def _receipt(entity: EntityType, note: str) -> tuple[FieldMapping, ...]:
    return (
        M(entity, "id", "PrivateNote", required=True),
        M(entity, "occurred_at", "TxnDate", T.DATE_FORMAT, date_format="%Y-%m-%d", required=True),
        M(entity, "amount.currency", "CurrencyRef.value"),
        M(entity, "amount", "TotalAmt", T.MINOR_TO_DECIMAL, required=True),
        M(entity, "lines", "Line"),  # none (an amount-only refund): one line of the total
        M(entity, "customer.email", "BillEmail.Address", T.LOWERCASE),
        M(entity, note, "CustomerMemo.value"),
    )


DEFAULTS: Mapping[tuple[Provider, EntityType], tuple[FieldMapping, ...]] = {
    (Provider.SQUARE, P): (
        M(P, "name", "item_data.name", T.TRIM, required=True),
        M(P, "description", "item_data.description"),
        M(P, "name", "item_variation_data.name", T.TRIM),
        M(P, "id", "item_variation_data.sku", required=True),
        M(P, "price.amount_minor", "item_variation_data.price_money.amount", required=True),
        M(P, "price.currency", "item_variation_data.price_money.currency", required=True),
    ),
    (Provider.SQUARE, C): (
        M(C, "given_name", "given_name", T.TRIM),
        M(C, "family_name", "family_name", T.TRIM),
        M(C, "email", "email_address", T.LOWERCASE, required=True),
        M(C, "phone", "phone_number", T.PHONE_E164),
        M(C, "id", "reference_id", required=True),
    ),
    (Provider.SQUARE, INV): (
        M(INV, "remaining", "quantity", required=True),
        M(INV, "updated_at", "occurred_at", T.DATE_ISO8601),
    ),
    (Provider.STRIPE, P): (
        M(P, "name", "name", T.TRIM, required=True),
        M(P, "description", "description"),
        M(P, "price.amount_minor", "default_price_data.unit_amount", required=True),
        M(P, "price.currency", "default_price_data.currency", T.LOWERCASE, required=True),
        M(P, "event.id", "metadata.event_id"),
        M(P, "event.starts_at", "metadata.starts_at", T.DATE_ISO8601),
    ),
    (Provider.QUICKBOOKS, P): (
        M(P, "name", "Name", T.TRIM, required=True),
        M(P, "description", "Description"),
        M(P, "id", "Sku"),
        M(P, "price", "UnitPrice", T.MINOR_TO_DECIMAL),
        M(P, "", "Type", T.CONSTANT, constant="Service"),
        M(P, "", "IncomeAccountRef.value", T.CONSTANT, constant="1"),
    ),
    (Provider.QUICKBOOKS, C): (
        M(C, "email", "DisplayName", T.LOWERCASE, required=True),
        M(C, "given_name", "GivenName", T.TRIM),
        M(C, "family_name", "FamilyName", T.TRIM),
        M(C, "email", "PrimaryEmailAddr.Address", T.LOWERCASE),
        M(C, "phone", "PrimaryPhone.FreeFormNumber"),
    ),
    (Provider.QUICKBOOKS, PAY): (
        *_receipt(PAY, "description"),
        M(PAY, "", "DepositToAccountRef.value", T.CONSTANT, constant="3"),
    ),
    (Provider.QUICKBOOKS, REF): (
        *_receipt(REF, "reason"),
        M(REF, "", "DepositToAccountRef.value", T.CONSTANT, constant="4"),
    ),
    (Provider.MAILCHIMP, C): (
        M(C, "email", "email_address", T.LOWERCASE, required=True),
        M(
            C,
            "marketing_consent",
            "status",
            T.LOOKUP,
            lookup={"true": "subscribed", "false": "transactional"},
            default="transactional",
        ),
        M(C, "given_name", "merge_fields.FNAME", T.TRIM),
        M(C, "family_name", "merge_fields.LNAME", T.TRIM),
    ),
}
"""The mapping each (provider, entity) uses while a connection stores none. Receipts carry our
payment / refund id in PrivateNote (DocNumber takes only 21 characters); their `Line` is our
lines list as is: the QuickBooks writer turns each line into a SalesItemLineDetail with the
product's Item from the id map. QuickBooks account refs are the stand-in's seeded accounts
(1 Services income, 3 Undeposited Funds, 4 Checking); a venue sets its own through
SetFieldMappings."""


# -- storage form -----------------------------------------------------------------------------


def to_json(mapping: FieldMapping) -> dict[str, Any]:
    """A mapping as the store keeps it (JSON; only the fields that are set)."""
    out: dict[str, Any] = {
        "entity": mapping.entity.value,
        "internal_field": mapping.internal_field,
        "external_field": mapping.external_field,
        "transform": mapping.transform.value,
    }
    for name in ("constant", "default", "date_format", "time_zone"):
        if value := getattr(mapping, name):
            out[name] = value
    if mapping.required:
        out["required"] = True
    if mapping.lookup:
        out["lookup"] = dict(mapping.lookup)
    return out


def from_json(data: Mapping[str, Any]) -> FieldMapping:
    return FieldMapping(
        entity=EntityType(data["entity"]),
        internal_field=str(data.get("internal_field", "")),
        external_field=str(data["external_field"]),
        transform=Transform(data.get("transform", Transform.COPY.value)),
        constant=str(data.get("constant", "")),
        default=str(data.get("default", "")),
        required=bool(data.get("required", False)),
        lookup={str(k): str(v) for k, v in (data.get("lookup") or {}).items()},
        date_format=str(data.get("date_format", "")),
        time_zone=str(data.get("time_zone", "")),
    )
