"""Wiring of the notify service: build everything once from the kit's shared resources, hand it
in.

  settings → senders per channel, in failover order, each behind its provider's kit guard
  (smtp, sendgrid, twilio) → receipt verifiers → the shared steps (links, events, consent) →
  the use cases → the servicer, the HTTP routes (receipts, one-click unsubscribe), the
  delivery workers and housekeeping.

Lifecycle (the kit's hooks): at start, once the ports are bound, the shipped templates are
seeded; at stop, after the workers finished their round, the senders close their connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import cast

from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from notify_service import templates as shipped_templates
from notify_service.adapters.base import Sender
from notify_service.adapters.secrets import load_unsubscribe_secret
from notify_service.adapters.sendgrid import SendGridSender, SendGridVerifier
from notify_service.adapters.smtp import SmtpConfig, SmtpSender
from notify_service.adapters.twilio import TwilioSender, TwilioVerifier
from notify_service.api.errors import to_mesh_error
from notify_service.api.servicer import NotifyServicer
from notify_service.domain.addresses import AddressRules
from notify_service.domain.model import Channel
from notify_service.domain.retry import RetryPolicy
from notify_service.http import unsubscribe, webhooks
from notify_service.jobs import housekeeping
from notify_service.jobs.delivery import Deliverer
from notify_service.policy import POLICY
from notify_service.settings import NotifySettings
from notify_service.usecases.delivery import Delivery, DeliveryRules
from notify_service.usecases.events import NotifyEvents
from notify_service.usecases.links import (
    SENDGRID_PATH,
    TWILIO_INBOUND_PATH,
    TWILIO_STATUS_PATH,
    Links,
)
from notify_service.usecases.metrics import NotifyMetrics
from notify_service.usecases.preferences import PreferenceCases
from notify_service.usecases.reads import Reads
from notify_service.usecases.receipts import Receipts
from notify_service.usecases.sending import Sending, SendingRules
from notify_service.usecases.templates import Templates
from tickettoken.notify.v1 import notify_pb2_grpc


def public_base_url(settings: NotifySettings, kit: Kit) -> Callable[[], str]:
    """The public base of the service's links: the setting, else this process's HTTP port
    (known once bound, hence a function)."""
    configured = settings.notify_public_base_url.rstrip("/")
    if configured:
        return lambda: configured
    return lambda: kit.http.local_url()


def build_senders(settings: NotifySettings, kit: Kit) -> dict[Channel, list[Sender]]:
    # A send is cut off at half the lease, so a slow provider never outlives the claim.
    timeout = settings.notify_worker_lease_s / 2
    made: dict[str, Sender] = {}
    for name in settings.configured:
        if name == "smtp":
            made[name] = SmtpSender(
                SmtpConfig(
                    host=settings.smtp_host,
                    port=settings.smtp_port,
                    username=settings.smtp_username,
                    password=settings.smtp_password.get_secret_value(),
                    tls=settings.smtp_tls,
                    timeout_s=settings.smtp_timeout_s,
                    pool_size=settings.smtp_pool_size,
                ),
                kit.guards["smtp"],
                timeout_s=timeout,
            )
        elif name == "sendgrid":
            made[name] = SendGridSender(
                api_key=settings.sendgrid_api_key.get_secret_value(),
                api_base=settings.sendgrid_api_base,
                guard=kit.guards["sendgrid"],
                request_timeout_s=settings.sendgrid_timeout_s,
                timeout_s=timeout,
            )
        elif name == "twilio":
            made[name] = TwilioSender(
                account_sid=settings.twilio_account_sid,
                auth_token=settings.twilio_auth_token.get_secret_value(),
                api_base=settings.twilio_api_base,
                from_number=settings.twilio_from_number,
                messaging_service_sid=settings.twilio_messaging_service_sid,
                guard=kit.guards["twilio"],
                request_timeout_s=settings.twilio_timeout_s,
                timeout_s=timeout,
            )
    return {
        channel: [made[p] for p in settings.providers_for(channel.value)]
        for channel in Channel
        if settings.providers_for(channel.value)
    }


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    settings = cast(NotifySettings, kit.settings)
    senders = build_senders(settings, kit)
    for sender in {id(s): s for group in senders.values() for s in group}.values():
        kit.on_stop(sender.close)  # after the workers: the kit stops them before its stop hooks
    address_rules = AddressRules(
        allow_test_domains=not settings.is_production, strict_phone=settings.is_production
    )
    metrics = NotifyMetrics(kit.registry)
    links = Links(
        secret=load_unsubscribe_secret(settings), public_base=public_base_url(settings, kit)
    )
    events = NotifyEvents(kit.events)
    wake = asyncio.Event()

    templates = Templates(
        kit.db,
        default_locale=settings.notify_default_locale,
        cache_s=settings.notify_template_cache_s,
    )
    sending = Sending(
        db=kit.db,
        templates=templates,
        rules=SendingRules(
            channels={c: tuple(s.name for s in group) for c, group in senders.items()},
            address_rules=address_rules,
            dedup_window_s=settings.notify_dedup_window_s,
            max_attachment_bytes=settings.notify_max_attachment_bytes,
            from_email=settings.notify_from_email,
        ),
        links=links,
        metrics=metrics,
        wake=wake,
    )
    receipts = Receipts(
        db=kit.db,
        events=events,
        metrics=metrics,
        sendgrid=(
            SendGridVerifier(settings.sendgrid_webhook_public_key)
            if "sendgrid" in settings.configured
            else None
        ),
        twilio=(
            TwilioVerifier(settings.twilio_auth_token.get_secret_value())
            if "twilio" in settings.configured
            else None
        ),
        tolerance_s=settings.notify_webhook_tolerance_s,
        address_rules=address_rules,
    )
    preferences = PreferenceCases(db=kit.db, links=links)
    delivery = Delivery(
        db=kit.db,
        senders=senders,
        events=events,
        metrics=metrics,
        links=links,
        rules=DeliveryRules(
            batch=settings.notify_worker_batch,
            lease_s=settings.notify_worker_lease_s,
            send_concurrency=settings.notify_send_concurrency,
            per_call=settings.notify_smtp_session_messages,
            retry=RetryPolicy(
                max_attempts=settings.notify_max_attempts,
                base_delay=settings.notify_retry_base_s,
                max_delay=settings.notify_retry_max_s,
            ),
            from_email=settings.notify_from_email,
            reply_to=settings.notify_reply_to,
            address_rules=address_rules,
        ),
    )

    if settings.notify_seed_templates:
        catalog = shipped_templates.shipped()

        async def seed() -> None:
            await templates.seed(catalog)

        kit.on_start(seed)
    kit.add_http_route("POST", SENDGRID_PATH, webhooks.route(receipts, links, "sendgrid"))
    kit.add_http_route("POST", TWILIO_STATUS_PATH, webhooks.route(receipts, links, "twilio"))
    kit.add_http_route("POST", TWILIO_INBOUND_PATH, webhooks.route(receipts, links, "twilio"))
    confirm_page, one_click = unsubscribe.routes(preferences)
    kit.add_http_route("GET", unsubscribe.PATH, confirm_page)
    kit.add_http_route("POST", unsubscribe.PATH, one_click)
    for i in range(settings.notify_workers):
        name = f"notify-delivery-{i}"
        kit.add_worker(
            name, Deliverer(name, delivery, poll_s=settings.notify_worker_poll_s, wake=wake)
        )
    kit.add_leased_job(
        housekeeping.NAME,
        60.0,
        housekeeping.housekeeping(
            kit.db, metrics, inbox_retention_s=settings.notify_inbox_retention_s
        ),
    )
    return [
        ServiceRegistration.of(
            notify_pb2_grpc,
            "NotifyService",
            NotifyServicer(
                sending=sending,
                reads=Reads(kit.db),
                templates=templates,
                preferences=preferences,
                receipts=receipts,
            ),
            policy=POLICY,
            errors=to_mesh_error,
        )
    ]


DEFINITION = ServiceDefinition.of(NotifySettings, build, __file__)
