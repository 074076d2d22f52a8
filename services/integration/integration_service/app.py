"""Wiring of the integration service: build everything once from the kit's shared resources,
hand it in.

  settings → the vault's key-encryption keys (local in dev/test, AWS KMS behind a `kms` guard)
  → the provider adapters, each behind its provider's kit guard (square, quickbooks, mailchimp,
  stripe) → the shared steps (vault, events, connection states, token keeper) → the use cases
  → the servicer, the HTTP routes (OAuth callback, webhooks), the proactive token refresh and
  housekeeping (leased jobs).

Lifecycle (the kit's hooks): at start QuickBooks' discovery document is read (its authorization
endpoint); at stop the HTTP clients close.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import cast

import httpx

from integration_service.adapters.base import ApiKeyAdapter, OAuthAdapter
from integration_service.adapters.keys import KeyWrapper, KmsKeys, LocalKeys
from integration_service.adapters.mailchimp import MailchimpAdapter
from integration_service.adapters.quickbooks import QuickBooksAdapter
from integration_service.adapters.square import SquareAdapter
from integration_service.adapters.stripe import StripeAdapter
from integration_service.api.errors import to_mesh_error
from integration_service.api.servicer import IntegrationServicer
from integration_service.domain.model import Provider
from integration_service.domain.tokens import RefreshTiming
from integration_service.http import routes
from integration_service.jobs import changes, housekeeping, refresh
from integration_service.policy import POLICY
from integration_service.settings import IntegrationSettings
from integration_service.store import mappings as mappings_store
from integration_service.store.oauth_states import OAuthStates
from integration_service.sync.engine import EngineSettings, SyncEngine
from integration_service.sync.metrics import SyncMetrics
from integration_service.usecases.changes import ChangeCases
from integration_service.usecases.connections import ConnectionCases
from integration_service.usecases.events import IntegrationEvents
from integration_service.usecases.mappings import MappingCases
from integration_service.usecases.metrics import IntegrationMetrics
from integration_service.usecases.oauth import OAuthCases
from integration_service.usecases.providers import Limits, ProviderCases
from integration_service.usecases.states import ConnectionStates
from integration_service.usecases.sync import SyncCases
from integration_service.usecases.tokens import RefreshRules, TokenKeeper
from integration_service.usecases.transactions import TransactionCases
from integration_service.usecases.vault import Vault
from integration_service.usecases.webhooks import WebhookCases, WebhookSecrets
from meshkit.jobs import PollingWorker
from meshkit.resilience import Guard, Guards, ProviderGuard, ProviderPolicy
from meshkit.routing import EventRouter
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from tickettoken.integration.v1 import integration_pb2_grpc

KMS_POLICY = ProviderPolicy(concurrency=50, max_attempts=3, attempt_timeout_s=5.0)
"""AWS KMS: thousands of requests a second per account; a breaker and retries only."""


def public_base_url(settings: IntegrationSettings, kit: Kit) -> Callable[[], str]:
    """The public base of the HTTP port: the setting, else this process's bound port."""
    configured = settings.integration_public_base_url.rstrip("/")
    if configured:
        return lambda: configured
    return lambda: kit.http.local_url()


def kms_guard(guards: Guards) -> ProviderGuard:
    """The `kms` guard: PROVIDER_POLICIES may define one; else a breaker and retries."""
    if "kms" in guards:
        return guards["kms"]
    return Guard("kms", KMS_POLICY, guards.shared, guards.metrics, guards.settings)


def build_keys(settings: IntegrationSettings, guards: Guards) -> KeyWrapper:
    """The vault's KEKs (also used by the operator CLI, integrationctl)."""
    versions = settings.kek_versions
    if settings.integration_kek_backend == "kms":
        return KmsKeys(
            versions,
            kms_guard(guards),
            active=settings.integration_kek_active,
            endpoint_url=settings.integration_kms_endpoint_url,
            region=settings.integration_kms_region,
        )
    if not versions:
        return LocalKeys.dev(settings.dev_kek_path)
    return LocalKeys.from_refs(versions, settings.integration_kek_active)


def build_adapters(
    settings: IntegrationSettings, kit: Kit
) -> tuple[dict[Provider, OAuthAdapter], dict[Provider, ApiKeyAdapter]]:
    timeout = settings.integration_provider_timeout_s
    enabled = settings.providers_enabled
    oauth: dict[Provider, OAuthAdapter] = {}
    if enabled["square"]:
        oauth[Provider.SQUARE] = SquareAdapter(
            application_id=settings.square_application_id,
            application_secret=settings.square_application_secret.get_secret_value(),
            api_base=settings.square_api_base,
            guard=kit.guards["square"],
            timeout_s=timeout,
        )
    if enabled["quickbooks"]:
        quickbooks = QuickBooksAdapter(
            client_id=settings.quickbooks_client_id,
            client_secret=settings.quickbooks_client_secret.get_secret_value(),
            discovery_url=settings.quickbooks_discovery_url,
            api_base=settings.quickbooks_api_base,
            guard=kit.guards["quickbooks"],
            timeout_s=timeout,
        )
        kit.on_start(quickbooks.start)
        oauth[Provider.QUICKBOOKS] = quickbooks
    if enabled["mailchimp"]:
        mailchimp = MailchimpAdapter(
            client_id=settings.mailchimp_client_id,
            client_secret=settings.mailchimp_client_secret.get_secret_value(),
            login_base=settings.mailchimp_login_base,
            guard=kit.guards["mailchimp"],
            timeout_s=timeout,
        )
        kit.on_stop(mailchimp.close)
        oauth[Provider.MAILCHIMP] = mailchimp
    keys: dict[Provider, ApiKeyAdapter] = {
        Provider.STRIPE: StripeAdapter(
            api_base=settings.stripe_api_base, guard=kit.guards["stripe"], timeout_s=timeout
        )
    }
    return oauth, keys


def limits_of(kit: Kit) -> dict[Provider, Limits]:
    found: dict[Provider, Limits] = {}
    for provider in Provider:
        policy = kit.guards[provider.value].policy
        found[provider] = Limits(
            rate=int(policy.rate or 0),
            period_s=int(policy.period_s),
            concurrency=int(policy.concurrency or 0),
        )
    return found


def build_sync(settings: IntegrationSettings, kit: Kit, tokens: TokenKeeper) -> SyncCases:
    """The sync engine: `integration_sync_workers` polling workers claiming queued jobs (woken
    at once by StartSync in this process), raw HTTP to the providers through one shared httpx
    client under their guards, and the leased job that queues due schedules."""
    http = httpx.AsyncClient(timeout=settings.integration_provider_timeout_s)
    kit.on_stop(http.aclose)
    engine = SyncEngine(
        db=kit.db,
        tokens=tokens,
        guards=kit.guards,
        http=http,
        api_bases={
            Provider.SQUARE: settings.square_api_base,
            Provider.QUICKBOOKS: settings.quickbooks_api_base,
            Provider.STRIPE: settings.stripe_api_base,
        },
        settings=EngineSettings(
            worker_id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            lease_s=settings.integration_sync_lease_s,
            outage_retries=settings.integration_sync_outage_retries,
            outage_backoff_s=settings.integration_sync_outage_backoff_s,
        ),
        load_mappings=mappings_store.load,
    )
    cases = SyncCases(db=kit.db, wake=engine.wake)
    sync_metrics = SyncMetrics(kit.db, kit.registry)
    kit.on_scrape(sync_metrics.refresh_if_due)  # the tables read when Prometheus scrapes
    kit.on_stop(sync_metrics.close)
    for n in range(settings.integration_sync_workers):
        kit.add_worker(
            f"sync-{n}",
            PollingWorker(
                f"sync-{n}", engine.step, idle_s=settings.integration_sync_idle_s, wake=engine.wake
            ),
        )
    if settings.integration_sync_schedule_interval_s > 0:
        kit.add_leased_job(
            "integration-sync-schedules",
            settings.integration_sync_schedule_interval_s,
            cases.run_schedules,
        )
    return cases


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    settings = cast(IntegrationSettings, kit.settings)
    base = public_base_url(settings, kit)
    prefix = f"{settings.guard_key_prefix}:{settings.schema_name}:integration"
    oauth_adapters, key_adapters = build_adapters(settings, kit)
    metrics = IntegrationMetrics(kit.registry)
    vault = Vault(build_keys(settings, kit.guards), metrics)
    events = IntegrationEvents(kit.events)
    states = ConnectionStates(events)
    rules = RefreshRules(
        timing=RefreshTiming(
            access_lead_s=settings.integration_refresh_lead_s,
            refresh_lead_s=settings.integration_refresh_token_lead_s,
        ),
        lock_s=settings.integration_refresh_lock_s,
    )
    tokens = TokenKeeper(
        db=kit.db,
        redis=kit.redis,
        key_prefix=prefix,
        vault=vault,
        adapters=oauth_adapters,
        states=states,
        rules=rules,
        metrics=metrics,
    )

    def redirect_uris() -> list[str]:
        return [*settings.integration_redirect_uris, base() + routes.CALLBACK_PATH]

    oauth = OAuthCases(
        db=kit.db,
        states=OAuthStates(kit.redis, prefix),
        vault=vault,
        adapters=oauth_adapters,
        connection_states=states,
        rules=rules,
        state_ttl_s=settings.integration_oauth_state_ttl_s,
        redirect_uris=redirect_uris,
    )
    connections = ConnectionCases(
        db=kit.db,
        vault=vault,
        tokens=tokens,
        states=states,
        oauth_adapters=oauth_adapters,
        key_adapters=key_adapters,
        allow_test_keys=not settings.is_production,
    )
    webhooks = WebhookCases(
        db=kit.db,
        vault=vault,
        events=events,
        states=states,
        secrets=WebhookSecrets(
            square_signature_key=settings.square_webhook_signature_key.get_secret_value(),
            square_notification_url=settings.integration_public_base_url.rstrip("/")
            + "/webhooks/square",
            quickbooks_verifier_token=settings.quickbooks_verifier_token.get_secret_value(),
            max_age_s=settings.integration_webhook_max_age_s,
            stripe_tolerance_s=settings.integration_stripe_webhook_tolerance_s,
        ),
        metrics=metrics,
    )
    enabled = {Provider(p): on for p, on in settings.providers_enabled.items()}

    kit.add_http_route("GET", routes.CALLBACK_PATH, routes.oauth_callback(oauth))
    kit.add_http_route("POST", "/webhooks/square", routes.webhook(webhooks, "square", base))
    kit.add_http_route("POST", "/webhooks/quickbooks", routes.webhook(webhooks, "quickbooks", base))
    kit.add_http_route(
        "POST", "/webhooks/stripe/{connection_id}", routes.webhook(webhooks, "stripe", base)
    )
    for method in ("GET", "POST"):
        kit.add_http_route(
            method,
            "/webhooks/mailchimp/{connection_id}",
            routes.webhook(webhooks, "mailchimp", base),
        )
    if settings.integration_refresh_interval_s > 0:
        kit.add_leased_job(
            refresh.NAME, settings.integration_refresh_interval_s, refresh.job(tokens)
        )
    kit.add_leased_job(housekeeping.NAME, 3600.0, housekeeping.job(kit.db))
    sync = build_sync(settings, kit, tokens)
    # integration's own relay: a provider's change (verified webhook) → an incremental pull.
    kit.add_outbox_relay(
        EventRouter(
            changes.routes(ChangeCases(sync=sync)), registry=kit.registry, relay="integration"
        ),
        name="integration-relay",
    )
    return [
        ServiceRegistration.of(
            integration_pb2_grpc,
            "IntegrationService",
            IntegrationServicer(
                providers=ProviderCases(enabled, limits_of(kit)),
                oauth=oauth,
                connections=connections,
                webhooks=webhooks,
                mappings=MappingCases(db=kit.db),
                sync=sync,
                transactions=TransactionCases(db=kit.db, sync=sync),
            ),
            policy=POLICY,
            errors=to_mesh_error,
        )
    ]


DEFINITION = ServiceDefinition.of(IntegrationSettings, build, __file__)
