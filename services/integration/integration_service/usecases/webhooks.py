"""HandleProviderWebhook (RPC and HTTP): verify, deduplicate, hand to the sync engine.

A delivery is verified first (Square, QuickBooks: the app's signing secrets; Stripe: the
connection's endpoint secret from the vault; Mailchimp: the connection's URL secret against its
stored digest) — a forged, stale or malformed one changes nothing. Each verified event is then
handled in one transaction: its inbox row (provider, event id) and a `ProviderChangeReceived`
per live connection of the account (the sync engine's input, through the outbox); Square's
`oauth.authorization.revoked` also moves the connections to NEEDS_REAUTH. A replay finds the
inbox row and changes nothing; a failure rolls everything back, so the provider's retry is
processed again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from integration_service.domain import webhooks
from integration_service.domain.errors import (
    ConnectionNotFound,
    IntegrationError,
    ProviderNotConfigured,
    WebhookMalformed,
    WebhookNotProcessed,
    WebhookUnverified,
)
from integration_service.domain.model import SYSTEM, Connection, ConnectionStatus, Provider
from integration_service.domain.webhooks import ProviderEvent
from integration_service.store import connections as connections_store
from integration_service.store import inbox
from integration_service.usecases.events import IntegrationEvents
from integration_service.usecases.metrics import IntegrationMetrics
from integration_service.usecases.states import ConnectionStates
from integration_service.usecases.vault import Vault
from meshkit.db import Database

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    provider: str
    payload: bytes
    headers: Mapping[str, str]
    url: str
    method: str = "POST"
    connection_id: uuid.UUID | None = None
    """From the URL path (Stripe, Mailchimp: one endpoint per connection)."""
    secret: str = ""
    """Mailchimp's URL secret."""


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    square_signature_key: str
    square_notification_url: str
    quickbooks_verifier_token: str
    max_age_s: float
    stripe_tolerance_s: float


@dataclass(frozen=True, slots=True)
class Handled:
    event_id: str
    event_type: str
    outcome: str
    """PROCESSED | DUPLICATE | IGNORED"""
    connection_ids: tuple[uuid.UUID, ...] = field(default_factory=tuple)


class WebhookCases:
    def __init__(
        self,
        *,
        db: Database,
        vault: Vault,
        events: IntegrationEvents,
        states: ConnectionStates,
        secrets: WebhookSecrets,
        metrics: IntegrationMetrics,
    ) -> None:
        self._db = db
        self._vault = vault
        self._events = events
        self._states = states
        self._secrets = secrets
        self._metrics = metrics

    async def _verify(
        self, delivery: WebhookDelivery
    ) -> tuple[list[ProviderEvent], uuid.UUID | None]:
        now = datetime.now(UTC)
        s = self._secrets
        if delivery.provider == Provider.SQUARE:
            if not s.square_signature_key:
                raise ProviderNotConfigured("square")
            url = delivery.url or s.square_notification_url
            return [
                webhooks.verify_square(
                    delivery.payload,
                    delivery.headers,
                    notification_url=url,
                    signature_key=s.square_signature_key,
                    now=now,
                    max_age_s=s.max_age_s,
                )
            ], None
        if delivery.provider == Provider.QUICKBOOKS:
            if not s.quickbooks_verifier_token:
                raise ProviderNotConfigured("quickbooks")
            return webhooks.verify_quickbooks(
                delivery.payload,
                delivery.headers,
                verifier_token=s.quickbooks_verifier_token,
                now=now,
                max_age_s=s.max_age_s,
            ), None
        connection_id = delivery.connection_id
        if connection_id is None:
            raise WebhookUnverified("url", "names no connection")
        if delivery.provider == Provider.MAILCHIMP:
            async with self._db.acquire() as conn:
                digest = await connections_store.webhook_digest(conn, connection_id)
            if digest is None:
                raise WebhookUnverified("url", "bad secret")
            return [
                webhooks.verify_mailchimp(
                    delivery.payload,
                    given_secret=delivery.secret,
                    stored_digest=digest,
                    now=now,
                    max_age_s=s.max_age_s,
                )
            ], connection_id
        if delivery.provider == Provider.STRIPE:
            async with self._db.acquire() as conn:
                try:
                    _, credential = await self._vault.open(
                        conn, connection_id, SYSTEM, "webhook_verify"
                    )
                except IntegrationError:
                    raise WebhookUnverified("url", "names no live connection") from None
            secret = credential.webhook_secret.reveal()
            if not secret:
                raise WebhookUnverified("url", "the connection has no webhook secret")
            return [
                webhooks.verify_stripe(
                    delivery.payload,
                    delivery.headers,
                    secret=secret,
                    now=now,
                    tolerance_s=s.stripe_tolerance_s,
                )
            ], connection_id
        raise WebhookMalformed("provider", "not an integration provider")

    async def handle(self, delivery: WebhookDelivery) -> Handled:
        if delivery.method == "GET" and delivery.provider == Provider.MAILCHIMP:
            # Mailchimp checks a webhook URL with a GET when it is saved: answered, no effect.
            return Handled("", "url_check", "IGNORED")
        try:
            events, connection_id = await self._verify(delivery)
        except IntegrationError:
            self._metrics.webhooks.labels(delivery.provider, "refused").inc()
            raise
        results: list[Handled] = []
        try:
            for event in events:
                results.append(await self._handle_one(event, connection_id))
        except IntegrationError:
            raise
        except Exception:
            logger.exception("webhook processing failed", extra={"provider": delivery.provider})
            raise WebhookNotProcessed() from None
        for result in results:
            self._metrics.webhooks.labels(delivery.provider, result.outcome.lower()).inc()
        first = results[0]
        outcomes = {r.outcome for r in results}
        outcome = next(o for o in ("PROCESSED", "IGNORED", "DUPLICATE") if o in outcomes)
        ids = tuple(i for r in results for i in r.connection_ids)
        return Handled(first.event_id, first.event_type, outcome, ids)

    async def _handle_one(self, event: ProviderEvent, connection_id: uuid.UUID | None) -> Handled:
        async with self._db.transaction() as conn:
            targets: list[Connection]
            if connection_id is not None:
                found = await connections_store.get(conn, connection_id)
                if found is None:
                    raise ConnectionNotFound()
                targets = [found] if found.status is not ConnectionStatus.DISCONNECTED else []
            else:
                targets = await connections_store.by_account(conn, event.provider, event.account_id)
            outcome = "PROCESSED" if targets else "IGNORED"
            ids = [t.id for t in targets]
            if not await inbox.claim(
                conn, event.provider.value, event.event_id, event.event_type, outcome, ids
            ):
                return Handled(event.event_id, event.event_type, "DUPLICATE")
            for target in targets:
                if event.revokes_grant:
                    await self._states.fail(
                        conn,
                        target.id,
                        ConnectionStatus.NEEDS_REAUTH,
                        code="authorization_revoked",
                        message="the seller removed the application at the provider",
                        detected_by="webhook",
                    )
                else:
                    await self._events.provider_change(conn, target, event)
        return Handled(event.event_id, event.event_type, outcome, tuple(ids))
