"""Settings of the integration service: the kit's settings plus this service's own.

A provider is enabled when its app credentials are set (Square application id + secret,
QuickBooks client id + secret, Mailchimp client id + secret; Stripe needs none: venues paste a
restricted key). Base URLs are settings so that dev and tests reach the dev kit's stand-ins.

The vault's key-encryption keys (KEKs) are versions `v=ref` in `INTEGRATION_KEK_VERSIONS`: a
base64 AES-256 key for the `local` backend (dev and test only), a KMS key id / ARN / alias for
`kms`. New data keys are wrapped under `INTEGRATION_KEK_ACTIVE`; RotateKeys re-wraps the rest.
With no versions outside production, a local key is generated under DEV_DIR/integration.

Production refuses: the local KEK, the dev kit's stand-ins (loopback base URLs), its
credentials (recognised by their markers, without importing the dev kit), plain-http provider
URLs, a missing public base URL, and an enabled provider missing its webhook secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from meshkit.settings import KitSettings, is_local_url

DEV_CREDENTIAL_MARKERS = ("meshdev",)
"""The dev kit's app credentials and keys all carry this marker."""

SQUARE_API_BASE = "https://connect.squareup.com"
QUICKBOOKS_DISCOVERY_URL = "https://developer.api.intuit.com/.well-known/openid_configuration"
QUICKBOOKS_API_BASE = "https://quickbooks.api.intuit.com"
MAILCHIMP_LOGIN_BASE = "https://login.mailchimp.com"
STRIPE_API_BASE = "https://api.stripe.com"


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class IntegrationSettings(KitSettings):
    """Environment variables of the integration service (see the README for the full list)."""

    service_name: ClassVar[str] = "integration"
    default_grpc_port: ClassVar[int] = 50054
    default_ops_port: ClassVar[int] = 9104
    default_http_port: ClassVar[int] = 8084

    # -- OAuth -------------------------------------------------------------------------------
    integration_public_base_url: str = Field(
        "",
        description="Public base URL of this service's HTTP port (OAuth callback, webhook "
        "URLs; Square signs the notification URL); dev default http://<HTTP_HOST>:<port>.",
    )
    integration_redirect_uris: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Allowed OAuth redirect URIs, comma-separated, matched exactly; the "
        "service's own <public base>/oauth/callback is always allowed.",
    )
    integration_oauth_state_ttl_s: float = Field(
        600.0, description="How long a StartOAuth state can be completed (single use)."
    )

    # -- vault -------------------------------------------------------------------------------
    integration_kek_backend: Literal["local", "kms"] = Field(
        "local",
        description="Where key-encryption keys live: local (keys in INTEGRATION_KEK_VERSIONS; "
        "dev and test only, production refuses it) or kms (AWS KMS).",
    )
    integration_kek_versions: SecretStr = Field(
        SecretStr(""),
        description="KEK versions, comma-separated version=ref: a base64 32-byte key (local) "
        "or a KMS key id/ARN/alias (kms). Empty outside production: a local key is generated "
        "under DEV_DIR/integration.",
    )
    integration_kek_active: str = Field(
        "",
        description="The KEK version new data keys are wrapped under and `integrationctl "
        "rotate-keys` re-wraps "
        "to (default: the last listed).",
    )
    integration_kms_endpoint_url: str = Field(
        "", description="AWS KMS endpoint override (tests: moto); empty = AWS's own."
    )
    integration_kms_region: str = Field("us-east-1", description="AWS region of the KMS keys.")

    # -- token refresh -----------------------------------------------------------------------
    integration_refresh_lead_s: float = Field(
        900.0,
        description="The proactive job refreshes an access token this long before it expires.",
    )
    integration_refresh_token_lead_s: float = Field(
        86400.0,
        description="... and a refresh token this long before it would expire unused.",
    )
    integration_refresh_interval_s: float = Field(
        60.0, description="How often the proactive refresh job runs (one replica at a time)."
    )
    integration_refresh_lock_s: float = Field(
        30.0,
        description="Lifetime of the refresh lock (a holder that dies frees it after this); "
        "callers wait up to this for another replica's refresh.",
    )

    # -- sync engine (issue 14) ---------------------------------------------------------------
    integration_sync_workers: int = Field(
        2, ge=0, description="Sync jobs this process runs at once (0: it runs none)."
    )
    integration_sync_lease_s: float = Field(
        30.0,
        gt=0,
        description="A claimed sync job stays a worker's this long without its heartbeat; "
        "after a crash another worker resumes it from its checkpoint once it runs out.",
    )
    integration_sync_idle_s: float = Field(
        1.0, gt=0, description="How often an idle sync worker looks for queued jobs."
    )
    integration_sync_outage_retries: int = Field(
        6,
        ge=0,
        description="Times a sync job whose provider is unavailable (after the guard's retries, "
        "or its breaker open) goes back to the queue to resume later before it fails.",
    )
    integration_sync_outage_backoff_s: float = Field(
        5.0,
        gt=0,
        description="A job's first wait after a provider outage, doubled each time up to 300 s "
        "(a longer Retry-After is honoured).",
    )
    integration_sync_schedule_interval_s: float = Field(
        30.0,
        description="How often due sync schedules are queued (one replica at a time; 0: never).",
    )

    # -- webhooks ----------------------------------------------------------------------------
    integration_webhook_max_age_s: float = Field(
        86400.0,
        description="Square, QuickBooks and Mailchimp events older than this are refused as "
        "stale (they sign no timestamp; their event times are checked).",
    )
    integration_stripe_webhook_tolerance_s: float = Field(
        300.0, description="Stripe signatures further than this from now are refused."
    )

    # -- Square ------------------------------------------------------------------------------
    square_application_id: str = Field("", description="Square application id (enables Square).")
    square_application_secret: SecretStr = Field(
        SecretStr(""), description="Square application secret (code flow, revoke)."
    )
    square_webhook_signature_key: SecretStr = Field(
        SecretStr(""), description="Square webhook subscription signature key."
    )
    square_api_base: str = Field(
        SQUARE_API_BASE, description="Square API and OAuth base URL (dev: the stand-in)."
    )

    # -- QuickBooks --------------------------------------------------------------------------
    quickbooks_client_id: str = Field("", description="Intuit app client id (enables QuickBooks).")
    quickbooks_client_secret: SecretStr = Field(SecretStr(""), description="Intuit client secret.")
    quickbooks_verifier_token: SecretStr = Field(
        SecretStr(""), description="Intuit webhook verifier token (intuit-signature)."
    )
    quickbooks_discovery_url: str = Field(
        QUICKBOOKS_DISCOVERY_URL,
        description="Intuit OAuth discovery document (dev: the stand-in's).",
    )
    quickbooks_api_base: str = Field(
        QUICKBOOKS_API_BASE, description="QuickBooks Accounting API base URL (without /v3)."
    )

    # -- Mailchimp ---------------------------------------------------------------------------
    mailchimp_client_id: str = Field("", description="Mailchimp OAuth client id (enables it).")
    mailchimp_client_secret: SecretStr = Field(
        SecretStr(""), description="Mailchimp OAuth client secret."
    )
    mailchimp_login_base: str = Field(
        MAILCHIMP_LOGIN_BASE,
        description="Mailchimp OAuth base URL (authorize, token, metadata); the API host "
        "comes from the metadata endpoint.",
    )

    # -- Stripe ------------------------------------------------------------------------------
    stripe_api_base: str = Field(
        STRIPE_API_BASE, description="Stripe API base URL for venues' restricted keys."
    )

    # -- providers' HTTP ---------------------------------------------------------------------
    integration_provider_timeout_s: float = Field(
        20.0, description="Timeout of one HTTP request to a provider."
    )

    @field_validator("integration_redirect_uris", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split(value)

    @model_validator(mode="after")
    def _check(self) -> IntegrationSettings:
        problems: list[str] = []
        try:
            versions = self.kek_versions
        except ValueError as exc:
            problems.append(str(exc))
            versions = {}
        if versions and self.integration_kek_active and self.integration_kek_active not in versions:
            problems.append("INTEGRATION_KEK_ACTIVE names no version of INTEGRATION_KEK_VERSIONS")
        if self.integration_kek_backend == "kms" and not versions:
            problems.append("INTEGRATION_KEK_VERSIONS is required with the kms backend")
        if self.integration_oauth_state_ttl_s <= 0 or self.integration_refresh_lock_s <= 0:
            problems.append("INTEGRATION_OAUTH_STATE_TTL_S and _REFRESH_LOCK_S must be > 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived values -----------------------------------------------------------------------
    @property
    def kek_versions(self) -> dict[str, str]:
        """version -> ref, in the order given."""
        text = self.integration_kek_versions.get_secret_value()
        versions: dict[str, str] = {}
        for part in _split(text):
            version, sep, ref = part.partition("=")
            if not sep or not version.strip() or not ref.strip():
                raise ValueError("INTEGRATION_KEK_VERSIONS entries must be version=ref")
            versions[version.strip()] = ref.strip()
        return versions

    @property
    def dev_kek_path(self) -> Path:
        return self.dev_dir / "integration" / "kek-dev-1.key"

    @property
    def providers_enabled(self) -> dict[str, bool]:
        return {
            "square": bool(
                self.square_application_id and self.square_application_secret.get_secret_value()
            ),
            "quickbooks": bool(
                self.quickbooks_client_id and self.quickbooks_client_secret.get_secret_value()
            ),
            "mailchimp": bool(
                self.mailchimp_client_id and self.mailchimp_client_secret.get_secret_value()
            ),
            "stripe": True,
        }

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.integration_kek_backend == "local":
            problems.append("INTEGRATION_KEK_BACKEND=local (a local key-encryption key)")
        if not self.integration_kek_versions.get_secret_value():
            problems.append("INTEGRATION_KEK_VERSIONS is required")
        if self.integration_kms_endpoint_url and is_local_url(self.integration_kms_endpoint_url):
            problems.append("INTEGRATION_KMS_ENDPOINT_URL points at this machine (moto)")
        base = self.integration_public_base_url
        if not base:
            problems.append("INTEGRATION_PUBLIC_BASE_URL is required")
        elif is_local_url(base) or not base.startswith("https://"):
            problems.append("INTEGRATION_PUBLIC_BASE_URL must be a public https URL")
        for uri in self.integration_redirect_uris:
            if is_local_url(uri) or not uri.startswith("https://"):
                problems.append(f"INTEGRATION_REDIRECT_URIS: {uri} is not a public https URL")
        enabled = self.providers_enabled
        urls = {
            "SQUARE_API_BASE": (self.square_api_base, enabled["square"]),
            "QUICKBOOKS_DISCOVERY_URL": (self.quickbooks_discovery_url, enabled["quickbooks"]),
            "QUICKBOOKS_API_BASE": (self.quickbooks_api_base, enabled["quickbooks"]),
            "MAILCHIMP_LOGIN_BASE": (self.mailchimp_login_base, enabled["mailchimp"]),
            "STRIPE_API_BASE": (self.stripe_api_base, True),
        }
        for name, (url, used) in urls.items():
            if used and (is_local_url(url) or not url.startswith("https://")):
                problems.append(f"{name} is not a public https URL (a local stand-in?)")
        secrets = {
            "SQUARE_APPLICATION_ID": self.square_application_id,
            "SQUARE_APPLICATION_SECRET": self.square_application_secret.get_secret_value(),
            "SQUARE_WEBHOOK_SIGNATURE_KEY": self.square_webhook_signature_key.get_secret_value(),
            "QUICKBOOKS_CLIENT_ID": self.quickbooks_client_id,
            "QUICKBOOKS_CLIENT_SECRET": self.quickbooks_client_secret.get_secret_value(),
            "QUICKBOOKS_VERIFIER_TOKEN": self.quickbooks_verifier_token.get_secret_value(),
            "MAILCHIMP_CLIENT_ID": self.mailchimp_client_id,
            "MAILCHIMP_CLIENT_SECRET": self.mailchimp_client_secret.get_secret_value(),
        }
        for name, value in secrets.items():
            if any(marker in value for marker in DEV_CREDENTIAL_MARKERS):
                problems.append(f"{name} is the dev kit's")
        if self.square_application_id and self.square_application_id.startswith("sandbox-"):
            problems.append("SQUARE_APPLICATION_ID is a sandbox application")
        if enabled["square"] and not self.square_webhook_signature_key.get_secret_value():
            problems.append("SQUARE_WEBHOOK_SIGNATURE_KEY is required when Square is enabled")
        if enabled["quickbooks"] and not self.quickbooks_verifier_token.get_secret_value():
            problems.append("QUICKBOOKS_VERIFIER_TOKEN is required when QuickBooks is enabled")
        return problems
