"""Proto ⇄ domain for IntegrationService: requests to use-case arguments, domain values to
messages. Nothing here decides anything."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from integration_service.domain.catalog import ProviderSpec
from integration_service.domain.mappings import FieldMapping, Transform
from integration_service.domain.model import (
    AuthKind,
    Connection,
    ConnectionFilter,
    Direction,
    EntityType,
    Provider,
)
from integration_service.usecases import transactions as tx
from integration_service.usecases.connections import TestResult
from integration_service.usecases.events import PROVIDERS, STATUSES
from integration_service.usecases.providers import ProviderOffer
from integration_service.usecases.webhooks import Handled, WebhookDelivery
from meshkit.paging import Cursor
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2 as pb

PROVIDER_OF = {v: k for k, v in PROVIDERS.items()}
STATUS_OF = {v: k for k, v in STATUSES.items()}
AUTH = {AuthKind.OAUTH2: pb.AUTH_TYPE_OAUTH2, AuthKind.API_KEY: pb.AUTH_TYPE_API_KEY}
DIRECTIONS = {
    Direction.PUSH: pb.SYNC_DIRECTION_PUSH,
    Direction.PULL: pb.SYNC_DIRECTION_PULL,
    Direction.BIDIRECTIONAL: pb.SYNC_DIRECTION_BIDIRECTIONAL,
}
WEBHOOK_STATUS = {
    "PROCESSED": common_pb2.WEBHOOK_STATUS_PROCESSED,
    "DUPLICATE": common_pb2.WEBHOOK_STATUS_DUPLICATE,
    "IGNORED": common_pb2.WEBHOOK_STATUS_IGNORED,
}


def provider(value: int) -> Provider:
    return PROVIDER_OF[value]  # type: ignore[index]  # the contract's rules refuse UNSPECIFIED and unknown values


def _entity(e: EntityType) -> int:
    return int(pb.EntityType.Value("ENTITY_TYPE_" + e.value))


def provider_proto(offer: ProviderOffer) -> pb.ProviderInfo:
    spec: ProviderSpec = offer.spec
    return pb.ProviderInfo(
        provider=PROVIDERS[spec.provider],
        display_name=spec.display_name,
        auth_type=AUTH[spec.auth_kind],
        default_scopes=list(spec.default_scopes),
        available_scopes=list(spec.available_scopes),
        capabilities=[
            pb.EntityCapability(
                entity_type=_entity(c.entity_type),  # type: ignore[arg-type]
                directions=[DIRECTIONS[d] for d in c.directions],
                incremental=c.incremental,
            )
            for c in spec.capabilities
        ],
        supports_webhooks=spec.supports_webhooks,
        enabled=offer.enabled,
        supports_pkce=spec.supports_pkce,
        access_token_lifetime_seconds=spec.access_token_lifetime_s,
        refresh_token_lifetime_seconds=spec.refresh_token_lifetime_s,
        refresh_token_rotates=spec.refresh_token_rotates,
        limits=pb.ProviderLimits(
            requests_per_period=offer.limits.rate,
            period_seconds=offer.limits.period_s,
            max_concurrent_requests=offer.limits.concurrency,
            scope=spec.limit_scope,
        ),
        api_host_note=spec.api_host_note,
    )


def _ts(target: object, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)  # type: ignore[attr-defined]


def connection_proto(c: Connection) -> pb.Connection:
    message = pb.Connection(
        id=str(c.id),
        venue_id=c.venue_id,
        provider=PROVIDERS[c.provider],
        status=STATUSES[c.status],
        auth_type=AUTH[c.auth_kind],
        scopes=list(c.scopes),
        external_account_id=c.external_account_id,
        external_account_name=c.external_account_name,
        credential_hint=c.credential_hint,
        last_error_code=c.last_error_code,
        last_error=c.last_error,
    )
    _ts(message.token_expires_at, c.token_expires_at)
    _ts(message.last_tested_at, c.last_tested_at)
    _ts(message.last_synced_at, c.last_synced_at)
    _ts(message.created_at, c.created_at)
    _ts(message.updated_at, c.updated_at)
    return message


def connection_filter(request: pb.ListConnectionsRequest) -> ConnectionFilter | None:
    """None when the request asks only for states no connection can be in (EXPIRED is not
    set by this version): the answer is an empty page."""
    if request.statuses and not any(s in STATUS_OF for s in request.statuses):
        return None
    return ConnectionFilter(
        venue_ids=(request.venue_id,) if request.venue_id else (),
        provider=PROVIDER_OF.get(request.provider) if request.provider else None,
        statuses=tuple(STATUS_OF[s] for s in request.statuses if s in STATUS_OF),
    )


def cursor_of(c: Connection) -> Cursor:
    return (c.created_at.isoformat(), str(c.id))


def page_after(cursor: Cursor | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    return datetime.fromisoformat(str(cursor[0])), uuid.UUID(str(cursor[1]))


def test_response(result: TestResult) -> pb.TestConnectionResponse:
    return pb.TestConnectionResponse(
        ok=result.ok,
        latency_ms=result.latency_ms,
        error_code=result.error_code,
        error_message=result.error_message,
        connection=connection_proto(result.connection),
    )


def webhook_delivery(webhook: common_pb2.ProviderWebhook) -> WebhookDelivery:
    """From HandleProviderWebhook: Stripe and Mailchimp name their connection in the URL
    (`…/webhooks/stripe/<id>`, `…/webhooks/mailchimp/<id>?secret=…`)."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(webhook.url) if webhook.url else None
    connection_id: uuid.UUID | None = None
    secret = ""
    if parts is not None:
        tail = parts.path.rstrip("/").rsplit("/", 1)[-1]
        try:
            connection_id = uuid.UUID(tail)
        except ValueError:
            connection_id = None
        secret = (parse_qs(parts.query).get("secret") or [""])[0]
    return WebhookDelivery(
        provider=webhook.provider,
        payload=webhook.payload,
        headers={k.lower(): v for k, v in webhook.headers.items()},
        url=webhook.url,
        method=webhook.http_method or "POST",
        connection_id=connection_id,
        secret=secret,
    )


def webhook_response(handled: Handled) -> pb.HandleProviderWebhookResponse:
    return pb.HandleProviderWebhookResponse(
        event_id=handled.event_id,
        event_type=handled.event_type,
        status=WEBHOOK_STATUS[handled.outcome],
        connection_id=str(handled.connection_ids[0]) if handled.connection_ids else "",
    )


# -- field mappings -------------------------------------------------------------------------

TRANSFORMS = {
    pb.FIELD_TRANSFORM_UNSPECIFIED: Transform.COPY,
    pb.FIELD_TRANSFORM_TRIM: Transform.TRIM,
    pb.FIELD_TRANSFORM_LOWERCASE: Transform.LOWERCASE,
    pb.FIELD_TRANSFORM_UPPERCASE: Transform.UPPERCASE,
    pb.FIELD_TRANSFORM_PHONE_E164: Transform.PHONE_E164,
    pb.FIELD_TRANSFORM_DATE_ISO8601: Transform.DATE_ISO8601,
    pb.FIELD_TRANSFORM_MINOR_UNITS_TO_DECIMAL: Transform.MINOR_TO_DECIMAL,
    pb.FIELD_TRANSFORM_DECIMAL_TO_MINOR_UNITS: Transform.DECIMAL_TO_MINOR,
    pb.FIELD_TRANSFORM_CONSTANT: Transform.CONSTANT,
    pb.FIELD_TRANSFORM_DATE_FORMAT: Transform.DATE_FORMAT,
    pb.FIELD_TRANSFORM_LOOKUP: Transform.LOOKUP,
}
TRANSFORM_OF = {v: k for k, v in TRANSFORMS.items()}


def entity(value: int) -> EntityType:
    """A defined, specified EntityType (the contract's rules refuse the others)."""
    return EntityType(pb.EntityType.Name(value).removeprefix("ENTITY_TYPE_"))  # type: ignore[arg-type]


def field_mapping(m: pb.FieldMapping) -> FieldMapping:
    return FieldMapping(
        entity=entity(m.entity_type),
        internal_field=m.internal_field,
        external_field=m.external_field,
        transform=TRANSFORMS[m.transform],
        constant=m.constant_value,
        default=m.default_value,
        required=m.required,
        lookup=dict(m.lookup),
        date_format=m.date_format,
        time_zone=m.time_zone,
    )


def field_mapping_proto(m: FieldMapping) -> pb.FieldMapping:
    return pb.FieldMapping(
        entity_type=_entity(m.entity),  # type: ignore[arg-type]
        internal_field=m.internal_field,
        external_field=m.external_field,
        transform=TRANSFORM_OF[m.transform],
        constant_value=m.constant,
        default_value=m.default,
        required=m.required,
        lookup=dict(m.lookup),
        date_format=m.date_format,
        time_zone=m.time_zone,
    )


# -- transactions ---------------------------------------------------------------------------


def _money(m: common_pb2.Money) -> tx.Money:
    return tx.Money(amount_minor=m.amount_minor, currency=m.currency)


def transaction(request: pb.RecordTransactionRequest) -> tx.Transaction:
    contact = request.buyer_contact
    return tx.Transaction(
        refund=request.kind == pb.TRANSACTION_KIND_REFUND,
        payment_id=request.payment_id,
        refund_id=request.refund_id,
        venue_id=request.venue_id,
        event_id=request.event_id,
        order_id=request.order_id,
        buyer_id=request.buyer_id,
        buyer_name=contact.name,
        buyer_email=contact.email,
        buyer_phone=contact.phone,
        marketing_consent=request.marketing_consent,
        lines=tuple(
            tx.Line(
                ticket_type_id=line.ticket_type_id,
                description=line.description,
                unit_price=_money(line.unit_price),
                quantity=line.quantity,
            )
            for line in request.lines
        ),
        amount=_money(request.amount),
        fees=_money(request.fees) if request.HasField("fees") else None,
        occurred_at=request.occurred_at.ToDatetime(tzinfo=UTC),
        provider_reference=request.provider_reference,
    )
