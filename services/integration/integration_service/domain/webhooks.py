"""Inbound provider webhooks: verification and parsing, as pure functions over the raw bytes.

| provider | verification |
| --- | --- |
| Square | `x-square-hmacsha256-signature` = base64(HMAC-SHA256(signature key, URL + body)) |
| QuickBooks | `intuit-signature` = base64(HMAC-SHA256(verifier token, body)) |
| Stripe | `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, 300 s |
| Mailchimp | unsigned: a per-connection secret in the URL, compared in constant time |

Every comparison is constant-time (`hmac.compare_digest`). A verified delivery becomes one or
more `ProviderEvent`s (QuickBooks batches several in one POST), each with the provider's event id
(a SHA-256 of the body for Mailchimp, which sends none) for deduplication. Square, QuickBooks
and Mailchimp sign no timestamp: their events' own times are checked against `max_age_s`
(a delivery older than that is stale: the providers retry for a day at most).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from integration_service.domain.errors import WebhookMalformed, WebhookStale, WebhookUnverified
from integration_service.domain.model import EntityType, Provider

SQUARE_HEADER = "x-square-hmacsha256-signature"
INTUIT_HEADER = "intuit-signature"
STRIPE_HEADER = "stripe-signature"


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One change a provider told us about (ids only: the sync engine fetches the records)."""

    provider: Provider
    event_id: str
    event_type: str
    account_id: str
    """The provider account it is about (Square merchant, QuickBooks realm); "" when the URL
    names the connection (Stripe, Mailchimp)."""
    entity_type: EntityType | None
    external_ids: tuple[str, ...]
    operation: str
    occurred_at: datetime | None

    @property
    def revokes_grant(self) -> bool:
        """The seller removed our application (Square `oauth.authorization.revoked`)."""
        return self.event_type == "oauth.authorization.revoked"


def _b64_hmac(key: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _fresh(occurred_at: datetime | None, now: datetime, max_age_s: float) -> None:
    if occurred_at is not None and (now - occurred_at).total_seconds() > max_age_s:
        raise WebhookStale("payload", f"the event is older than {int(max_age_s)} s")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise WebhookMalformed("payload", "not JSON") from None


def _entity(word: str) -> EntityType | None:
    word = word.lower()
    if word.startswith(("customer", "member", "subscribe", "unsubscribe", "profile", "upemail")):
        return EntityType.CUSTOMER
    if word.startswith(("catalog", "item", "product", "price")):
        return EntityType.PRODUCT
    if word.startswith("inventory"):
        return EntityType.INVENTORY
    if word.startswith(("salesreceipt", "payment")):
        return EntityType.PAYMENT
    if word.startswith(("refundreceipt", "refund")):
        return EntityType.REFUND
    return None


# -- Square -----------------------------------------------------------------------------------


def square_signature(signature_key: str, notification_url: str, body: bytes) -> str:
    return _b64_hmac(signature_key, notification_url.encode() + body)


def verify_square(
    payload: bytes,
    headers: Mapping[str, str],
    *,
    notification_url: str,
    signature_key: str,
    now: datetime,
    max_age_s: float,
) -> ProviderEvent:
    given = headers.get(SQUARE_HEADER, "")
    if not given:
        raise WebhookUnverified(f'headers["{SQUARE_HEADER}"]', "missing signature")
    if not _same(square_signature(signature_key, notification_url, payload), given):
        raise WebhookUnverified(f'headers["{SQUARE_HEADER}"]', "bad signature")
    body = _json(payload)
    if not isinstance(body, dict) or not body.get("event_id") or not body.get("type"):
        raise WebhookMalformed("payload", "not a Square event")
    occurred = _parse_time(body.get("created_at"))
    _fresh(occurred, now, max_age_s)
    event_type = str(body["type"])
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    object_id = str(data.get("id") or "") if isinstance(data, dict) else ""
    ids: tuple[str, ...] = (object_id,) if object_id else ()
    if event_type.startswith("inventory."):
        # data.id names the event, not a record: the counts' item variations are the records.
        obj = data.get("object") if isinstance(data, dict) else None
        counts = obj.get("inventory_counts") if isinstance(obj, dict) else None
        ids = tuple(
            dict.fromkeys(
                str(c["catalog_object_id"])
                for c in counts or []
                if isinstance(c, dict) and c.get("catalog_object_id")
            )
        )
    operation = event_type.rsplit(".", 1)[-1] if "." in event_type else ""
    return ProviderEvent(
        provider=Provider.SQUARE,
        event_id=str(body["event_id"]),
        event_type=event_type,
        account_id=str(body.get("merchant_id") or ""),
        entity_type=_entity(event_type),
        external_ids=ids,
        operation=operation if operation in ("created", "updated", "deleted") else "",
        occurred_at=occurred,
    )


# -- QuickBooks -------------------------------------------------------------------------------


def intuit_signature(verifier_token: str, body: bytes) -> str:
    return _b64_hmac(verifier_token, body)


def verify_quickbooks(
    payload: bytes,
    headers: Mapping[str, str],
    *,
    verifier_token: str,
    now: datetime,
    max_age_s: float,
) -> list[ProviderEvent]:
    given = headers.get(INTUIT_HEADER, "")
    if not given:
        raise WebhookUnverified(f'headers["{INTUIT_HEADER}"]', "missing signature")
    if not _same(intuit_signature(verifier_token, payload), given):
        raise WebhookUnverified(f'headers["{INTUIT_HEADER}"]', "bad signature")
    body = _json(payload)
    events: list[ProviderEvent] = []
    if isinstance(body, list):  # CloudEvents
        for item in body:
            if not isinstance(item, dict) or not item.get("id") or not item.get("type"):
                raise WebhookMalformed("payload", "not a QuickBooks CloudEvent")
            event_type = str(item["type"])  # qbo.customer.created.v1
            parts = event_type.split(".")
            entity_id = str(item.get("intuitentityid") or "")
            events.append(
                ProviderEvent(
                    provider=Provider.QUICKBOOKS,
                    event_id=str(item["id"]),
                    event_type=event_type,
                    account_id=str(item.get("intuitaccountid") or ""),
                    entity_type=_entity(parts[1]) if len(parts) > 2 else None,
                    external_ids=(entity_id,) if entity_id else (),
                    operation=parts[2] if len(parts) > 3 else "",
                    occurred_at=_parse_time(item.get("time")),
                )
            )
    elif isinstance(body, dict) and isinstance(body.get("eventNotifications"), list):
        for note in body["eventNotifications"]:
            realm = str(note.get("realmId") or "") if isinstance(note, dict) else ""
            change = note.get("dataChangeEvent") if isinstance(note, dict) else None
            entities = change.get("entities") if isinstance(change, dict) else None
            if not realm or not isinstance(entities, list):
                raise WebhookMalformed("payload", "not a QuickBooks notification")
            for entity in entities:
                if not isinstance(entity, dict):
                    raise WebhookMalformed("payload", "not a QuickBooks notification")
                name = str(entity.get("name") or "")
                operation = str(entity.get("operation") or "").lower()
                raw = json.dumps([realm, entity], sort_keys=True).encode()
                events.append(
                    ProviderEvent(
                        provider=Provider.QUICKBOOKS,
                        event_id="legacy-" + hashlib.sha256(raw).hexdigest()[:32],
                        event_type=f"{name}.{operation}",
                        account_id=realm,
                        entity_type=_entity(name),
                        external_ids=(str(entity.get("id")),) if entity.get("id") else (),
                        operation=operation if operation in ("create", "update", "delete") else "",
                        occurred_at=_parse_time(entity.get("lastUpdated")),
                    )
                )
    else:
        raise WebhookMalformed("payload", "not a QuickBooks notification")
    if not events:
        raise WebhookMalformed("payload", "no events")
    for event in events:
        _fresh(event.occurred_at, now, max_age_s)
    return events


# -- Stripe -----------------------------------------------------------------------------------


def stripe_signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_stripe(
    payload: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    now: datetime,
    tolerance_s: float,
) -> ProviderEvent:
    header = headers.get(STRIPE_HEADER, "")
    field = f'headers["{STRIPE_HEADER}"]'
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookUnverified(field, "bad timestamp") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookUnverified(field, "missing signature")
    expected = stripe_signature(secret, timestamp, payload)
    if not any(_same(expected, c) for c in candidates):
        raise WebhookUnverified(field, "bad signature")
    if abs(now.timestamp() - timestamp) > tolerance_s:
        raise WebhookStale(field, f"signed more than {int(tolerance_s)} s from now")
    body = _json(payload)
    if not isinstance(body, dict) or not body.get("id") or not body.get("type"):
        raise WebhookMalformed("payload", "not a Stripe event")
    event_type = str(body["type"])
    obj = body.get("data", {}).get("object") if isinstance(body.get("data"), dict) else None
    object_id = str(obj.get("id") or "") if isinstance(obj, dict) else ""
    if event_type.startswith("price.") and isinstance(obj, dict):
        # A price changed: the record we sync is its product.
        product = obj.get("product")
        object_id = str(product.get("id") if isinstance(product, dict) else product or "")
    created = body.get("created")
    operation = event_type.rsplit(".", 1)[-1]
    return ProviderEvent(
        provider=Provider.STRIPE,
        event_id=str(body["id"]),
        event_type=event_type,
        account_id=str(body.get("account") or ""),
        entity_type=_entity(event_type),
        external_ids=(object_id,) if object_id else (),
        operation=operation if operation in ("created", "updated", "deleted") else "",
        occurred_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
    )


# -- Mailchimp --------------------------------------------------------------------------------


def secret_digest(secret: str) -> bytes:
    """What is stored of a per-connection URL secret (never the secret itself)."""
    return hashlib.sha256(secret.encode()).digest()


def verify_mailchimp(
    payload: bytes,
    *,
    given_secret: str,
    stored_digest: bytes,
    now: datetime,
    max_age_s: float,
) -> ProviderEvent:
    if not given_secret or not hmac.compare_digest(secret_digest(given_secret), stored_digest):
        raise WebhookUnverified("url", "bad secret")
    try:
        form = dict(parse_qsl(payload.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise WebhookMalformed("payload", "not form-encoded") from None
    event_type = form.get("type", "")
    if not event_type:
        raise WebhookMalformed("payload", "not a Mailchimp event")
    fired = _parse_time(form.get("fired_at", "").replace(" ", "T"))
    _fresh(fired, now, max_age_s)
    # The member as the sync engine knows it: the subscriber hash (MD5 of the lower-cased
    # email, what the members API takes); `data[id]` (the unique email id) when none is given.
    email = form.get("data[email]", "").strip().lower()
    member = (
        hashlib.md5(email.encode(), usedforsecurity=False).hexdigest()
        if email
        else form.get("data[id]", "")
    )
    return ProviderEvent(
        provider=Provider.MAILCHIMP,
        event_id="mc-" + hashlib.sha256(payload).hexdigest()[:40],
        event_type=event_type,
        account_id="",
        entity_type=_entity(event_type),
        external_ids=(member,) if member else (),
        operation={"subscribe": "created", "unsubscribe": "deleted"}.get(event_type, "updated"),
        occurred_at=fired,
    )
