"""Settings of the notify service: the kit's settings plus this service's own.

Providers are chosen per channel, in order (`NOTIFY_EMAIL_PROVIDERS=smtp,sendgrid`): the first
sends, the next takes over when it fails after its retries or its breaker is open. A channel
with no provider is refused at SendNotification (CHANNEL_NOT_CONFIGURED), never silently
dropped. Start-up fails naming every missing setting of a configured provider; production also
refuses the dev kit's stand-ins (loopback URLs and hosts), its credentials (recognised by their
markers, without importing the dev kit), and — once email (or SMS) is configured — a missing
unsubscribe secret (every email carries a signed one-click link) or public URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from meshkit.settings import KitSettings, is_local_url

EMAIL_PROVIDERS = ("smtp", "sendgrid")
SMS_PROVIDERS = ("twilio",)
PUSH_PROVIDERS: tuple[str, ...] = ()
SENDGRID_API_BASE = "https://api.sendgrid.com"
TWILIO_API_BASE = "https://api.twilio.com"
# The dev kit's credentials, recognised by their markers (production code never imports it).
DEV_CREDENTIAL_MARKERS = ("meshdev", "deadbeef" * 2, "feedface" * 2)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip().lower() for part in value.split(",") if part.strip()]
    return value


class NotifySettings(KitSettings):
    """Environment variables of the notify service (see the README for the full list)."""

    service_name: ClassVar[str] = "notify"
    default_grpc_port: ClassVar[int] = 50053
    default_ops_port: ClassVar[int] = 9103
    default_http_port: ClassVar[int] = 8083

    # -- channels ----------------------------------------------------------------------------
    notify_email_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Email providers in failover order, comma-separated: smtp, sendgrid "
        "(empty: email is not offered; SendNotification answers CHANNEL_NOT_CONFIGURED).",
    )
    notify_sms_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="SMS providers in failover order: twilio (empty: SMS is not offered).",
    )
    notify_push_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Push providers; none is built yet, so push answers CHANNEL_NOT_CONFIGURED.",
    )
    notify_from_email: str = Field(
        "TicketToken <tickets@tickettoken.test>",
        description="From address of every email (name and address).",
    )
    notify_reply_to: str = Field("", description="Reply-To of every email (empty: none).")
    notify_public_base_url: str = Field(
        "",
        description="Public base URL of this service's HTTP port, for unsubscribe links and "
        "Twilio status callbacks (https in production); dev default http://<HTTP_HOST>:<port>.",
    )
    notify_unsubscribe_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC secret of one-click unsubscribe tokens (>= 32 characters; required "
        "in production once email is configured); dev default generated under DEV_DIR/notify.",
    )
    notify_default_locale: str = Field(
        "en-US", description="Template locale used when the recipient's has no template."
    )
    notify_dedup_window_s: float = Field(
        7 * 86400.0,
        description="How long a dedup_key holds its notification: a second request with the "
        "key within this window returns the first notification instead of sending again.",
    )
    notify_max_attachment_bytes: int = Field(
        10 * 1024 * 1024, description="Largest total size of one email's attachments."
    )
    notify_template_cache_s: float = Field(
        2.0,
        description="How long SendNotification reuses a template lookup (an upsert on this "
        "replica takes effect at once, on others within this time; 0 = never cache).",
    )
    notify_seed_templates: bool = Field(
        True,
        description="At start, store the shipped purchase-journey templates that are not in "
        "the database yet (never overwrites a stored version).",
    )

    # -- delivery ----------------------------------------------------------------------------
    notify_workers: int = Field(2, description="Delivery workers in this process.")
    notify_worker_batch: int = Field(50, description="Notifications one worker claims at once.")
    notify_send_concurrency: int = Field(16, description="Provider calls one worker makes at once.")
    notify_smtp_session_messages: int = Field(
        10,
        description="Messages sent over one SMTP session per guarded call (the server limits "
        "connections, not messages); a failed session resumes after the last accepted one.",
    )
    notify_worker_poll_s: float = Field(0.25, description="Queue poll interval when idle.")
    notify_worker_lease_s: float = Field(
        120.0,
        description="How long a claimed notification stays with its worker; a crashed worker's "
        "notifications are re-sent after this (with the same Message-ID). A send is cut off "
        "at half of it, so a slow provider never outlives the lease.",
    )
    notify_max_attempts: int = Field(
        6, description="Send rounds (each trying every provider) before it is dead-lettered."
    )
    notify_retry_base_s: float = Field(2.0, description="First retry delay (then doubling).")
    notify_retry_max_s: float = Field(300.0, description="Cap of the retry delay.")
    notify_webhook_tolerance_s: int = Field(
        300, description="SendGrid receipts signed longer ago (or ahead) than this are refused."
    )
    notify_inbox_retention_s: float = Field(
        30 * 86400.0, description="How long processed receipt ids are kept for deduplication."
    )

    # -- SMTP --------------------------------------------------------------------------------
    smtp_host: str = Field("127.0.0.1", description="SMTP relay host.")
    smtp_port: int = Field(2525, description="SMTP relay port (dev: the mail sink's).")
    smtp_username: str = Field("", description="SMTP AUTH login (empty: no AUTH).")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP AUTH password.")
    smtp_tls: Literal["off", "starttls", "tls"] = Field(
        "off",
        description="off (dev sink only; refused in production), starttls, or tls (implicit, "
        "port 465).",
    )
    smtp_timeout_s: float = Field(20.0, description="Timeout of one SMTP command.")
    smtp_pool_size: int = Field(16, description="SMTP connections kept open for reuse.")

    # -- SendGrid ----------------------------------------------------------------------------
    sendgrid_api_key: SecretStr = Field(
        SecretStr(""), description="SendGrid API key (required when sendgrid is configured)."
    )
    sendgrid_api_base: str = Field(
        SENDGRID_API_BASE,
        description="SendGrid API base URL; dev points it at the stand-in. Production refuses "
        "anything on this machine.",
    )
    sendgrid_webhook_public_key: str = Field(
        "",
        description="Event Webhook verification key (base64 DER, from SendGrid's Mail "
        "Settings; required when sendgrid is configured).",
    )
    sendgrid_timeout_s: float = Field(20.0, description="Timeout of one SendGrid request.")

    # -- Twilio ------------------------------------------------------------------------------
    twilio_account_sid: str = Field(
        "", description="Twilio Account SID (required when twilio is configured)."
    )
    twilio_auth_token: SecretStr = Field(
        SecretStr(""), description="Twilio auth token; also verifies X-Twilio-Signature."
    )
    twilio_api_base: str = Field(
        TWILIO_API_BASE,
        description="Twilio API base URL; dev points it at the stand-in. Production refuses "
        "anything on this machine.",
    )
    twilio_from_number: str = Field("", description="Sender number (E.164).")
    twilio_messaging_service_sid: str = Field(
        "", description="Messaging Service SID (used instead of TWILIO_FROM_NUMBER when set)."
    )
    twilio_timeout_s: float = Field(20.0, description="Timeout of one Twilio request.")

    @field_validator(
        "notify_email_providers", "notify_sms_providers", "notify_push_providers", mode="before"
    )
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split(value)

    @model_validator(mode="after")
    def _check_providers(self) -> NotifySettings:
        problems: list[str] = []
        for name, chosen, known in (
            ("NOTIFY_EMAIL_PROVIDERS", self.notify_email_providers, EMAIL_PROVIDERS),
            ("NOTIFY_SMS_PROVIDERS", self.notify_sms_providers, SMS_PROVIDERS),
            ("NOTIFY_PUSH_PROVIDERS", self.notify_push_providers, PUSH_PROVIDERS),
        ):
            unknown = [p for p in chosen if p not in known]
            if unknown:
                problems.append(
                    f"{name}: unknown {', '.join(unknown)} (known: {', '.join(known) or 'none'})"
                )
            if len(set(chosen)) != len(chosen):
                problems.append(f"{name}: a provider is listed twice")
        missing = self.missing_provider_settings()
        if missing:
            problems.append("required by the configured providers: " + ", ".join(missing))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived values -----------------------------------------------------------------------
    def providers_for(self, channel: str) -> list[str]:
        return {
            "EMAIL": self.notify_email_providers,
            "SMS": self.notify_sms_providers,
            "PUSH": self.notify_push_providers,
        }[channel]

    @property
    def configured(self) -> set[str]:
        return {
            *self.notify_email_providers,
            *self.notify_sms_providers,
            *self.notify_push_providers,
        }

    @property
    def unsubscribe_key_path(self) -> Path:
        return self.dev_dir / "notify" / "unsubscribe.key"

    def missing_provider_settings(self) -> list[str]:
        """Settings a configured provider cannot work without (every environment)."""
        missing: list[str] = []
        used = self.configured
        if "sendgrid" in used:
            if not self.sendgrid_api_key.get_secret_value():
                missing.append("SENDGRID_API_KEY")
            if not self.sendgrid_webhook_public_key:
                missing.append("SENDGRID_WEBHOOK_PUBLIC_KEY")
        if "twilio" in used:
            if not self.twilio_account_sid:
                missing.append("TWILIO_ACCOUNT_SID")
            if not self.twilio_auth_token.get_secret_value():
                missing.append("TWILIO_AUTH_TOKEN")
            if not self.twilio_from_number and not self.twilio_messaging_service_sid:
                missing.append("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        if "smtp" in used and not self.smtp_host:
            missing.append("SMTP_HOST")
        return missing

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        used = self.configured
        # Every email carries a signed one-click link; SMS status callbacks come back to us.
        if self.notify_email_providers:
            secret = self.notify_unsubscribe_secret.get_secret_value()
            if len(secret) < 32:
                problems.append("NOTIFY_UNSUBSCRIBE_SECRET is required (at least 32 characters)")
        if self.notify_email_providers or self.notify_sms_providers:
            if not self.notify_public_base_url:
                problems.append("NOTIFY_PUBLIC_BASE_URL is required")
            elif is_local_url(self.notify_public_base_url):
                problems.append("NOTIFY_PUBLIC_BASE_URL points at this machine")
            elif not self.notify_public_base_url.startswith("https://"):
                problems.append("NOTIFY_PUBLIC_BASE_URL must be https (RFC 8058 one-click links)")
        if "smtp" in used:
            if is_local_url(f"smtp://{self.smtp_host}:{self.smtp_port}"):
                problems.append("SMTP_HOST is this machine (the dev mail sink)")
            if self.smtp_tls == "off":
                problems.append("SMTP_TLS=off (mail and credentials would travel in clear)")
        if "sendgrid" in used:
            if is_local_url(self.sendgrid_api_base):
                problems.append("SENDGRID_API_BASE points at this machine (a local stand-in)")
            key = self.sendgrid_api_key.get_secret_value()
            if _dev_credential(key):
                problems.append("SENDGRID_API_KEY is the dev kit's key")
            elif key and not key.startswith("SG."):
                problems.append("SENDGRID_API_KEY is not a SendGrid key (SG....)")
        if "twilio" in used:
            if is_local_url(self.twilio_api_base):
                problems.append("TWILIO_API_BASE points at this machine (a local stand-in)")
            if _dev_credential(self.twilio_account_sid) or _dev_credential(
                self.twilio_auth_token.get_secret_value()
            ):
                problems.append("TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN are the dev kit's")
        return problems


def _dev_credential(value: str) -> bool:
    return any(marker in value for marker in DEV_CREDENTIAL_MARKERS)
