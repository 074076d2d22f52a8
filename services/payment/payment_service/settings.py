"""Settings of the payment service: the kit's settings, its event relay's (meshkit.routing) and
this service's own."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from meshkit.routing import RelaySettings
from meshkit.settings import is_local_url

STRIPE_API_BASE = "https://api.stripe.com"


class PaymentSettings(RelaySettings):
    """Environment variables of the payment service (see the README for the full list)."""

    service_name: ClassVar[str] = "payment"
    default_grpc_port: ClassVar[int] = 50051
    default_ops_port: ClassVar[int] = 9101
    default_http_port: ClassVar[int] = 8081

    # -- Stripe ----------------------------------------------------------------------------
    stripe_secret_key: SecretStr = Field(
        description="Stripe secret API key (required; sk_live_ in production)."
    )
    stripe_webhook_secret: SecretStr = Field(
        description="Signing secret of the Stripe webhook endpoint (required; whsec_...)."
    )
    stripe_api_base: str = Field(
        STRIPE_API_BASE,
        description="Stripe API base URL; dev and tests point it at localstripe. Production "
        "refuses anything but https://api.stripe.com.",
    )
    stripe_api_version: str = Field(
        "2026-02-25.clover",
        description="Stripe-Version of every request (pinned: PaymentIntent "
        "payment_method_types, which localstripe needs, is refused from 2026-09-30.endive, the "
        "SDK's default). Configure the webhook endpoint with the same version.",
    )
    stripe_timeout_s: float = Field(20.0, description="Timeout of one Stripe HTTP request.")
    stripe_payment_method_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["card"],
        description="payment_method_types sent with every PaymentIntent (comma-separated).",
    )
    stripe_webhook_tolerance_s: int = Field(
        300, description="Webhook signature timestamps older (or newer) than this are refused."
    )
    stripe_dev_register_webhook: bool = Field(
        False,
        description="Dev/test only: at start, register this service's POST /webhooks/stripe "
        "with the localstripe at STRIPE_API_BASE (refused in production).",
    )
    webhook_lock_timeout_ms: int = Field(
        5000,
        description="How long webhook processing waits for a row lock before answering 503 "
        "(Stripe retries).",
    )

    # -- Payments --------------------------------------------------------------------------
    supported_currencies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["USD", "EUR", "GBP", "CAD"],
        description="ISO 4217 currencies accepted (two-decimal currencies; comma-separated).",
    )
    max_tickets_per_order: int = Field(4, description="Most tickets one payment may buy.")
    max_payment_minor: int = Field(
        1_000_000, description="Largest payment total in minor units ($10,000.00)."
    )
    gas_fee_per_ticket_minor: int = Field(
        50, description="Estimated minting cost per ticket added to every cart, minor units."
    )
    entertainment_tax_bps: int = Field(
        100, description="Entertainment (amusement) tax for flagged venues, basis points."
    )
    refund_rate_limit_per_minute: int = Field(
        5, description="Refund requests one principal may make per minute."
    )

    # -- Balances and payouts ----------------------------------------------------------------
    funds_hold_s: float = Field(
        7 * 86400.0, description="Seconds a venue's sale stays pending before it is available."
    )
    venue_tier_cache_s: float = Field(
        60.0,
        description="How long a process reuses a venue's pricing tier (from its 30-day sales) "
        "before summing the sales again.",
    )
    chargeback_reserve_bps: int = Field(
        500, description="Share of a venue's available funds held back for chargebacks (bps)."
    )
    payout_min_minor: int = Field(10_000, description="Smallest payout ($100.00), minor units.")
    payout_daily_limit_minor: int = Field(
        5_000_000, description="Most a venue may be paid out per UTC day ($50,000.00)."
    )
    instant_payout_fee_bps: int = Field(100, description="Fee on instant payouts (1%), bps.")

    # -- Reconciliation ----------------------------------------------------------------------
    reconcile_interval_s: float = Field(
        300.0, description="How often the reconciliation job runs (0 = never)."
    )
    reconcile_older_than_s: float = Field(
        900.0, description="Payments unchanged this long in an open state are reconciled."
    )
    reconcile_batch: int = Field(100, description="Most payments one reconciliation checks.")
    outbox_stuck_after_s: float = Field(
        900.0, description="Outbox events undelivered this long are requeued by reconciliation."
    )

    @field_validator("stripe_payment_method_types", "supported_currencies", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("supported_currencies")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [c.upper() for c in value]

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if not self.stripe_secret_key.get_secret_value().startswith("sk_live_"):
            problems.append("STRIPE_SECRET_KEY is not a live key (sk_live_...)")
        if not self.stripe_webhook_secret.get_secret_value().startswith("whsec_"):
            problems.append("STRIPE_WEBHOOK_SECRET is not a webhook signing secret (whsec_...)")
        if self.stripe_api_base.rstrip("/") != STRIPE_API_BASE or is_local_url(
            self.stripe_api_base
        ):
            problems.append(f"STRIPE_API_BASE is not {STRIPE_API_BASE} (a local stand-in?)")
        if self.stripe_dev_register_webhook:
            problems.append("STRIPE_DEV_REGISTER_WEBHOOK is set (localstripe only)")
        return problems
