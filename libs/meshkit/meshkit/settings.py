"""Typed settings read once from the environment, with a start-up check that names every problem.

Each service subclasses `KitSettings` (adding its own fields and defaults such as its port) and
loads it with `load_settings`, which turns pydantic's validation errors into one message naming
every missing variable, and in production refuses dev defaults (dev JWT keys, embedded databases,
test provider keys, local stand-ins) in one message too.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_ISSUER = "tickettoken-dev"
DEV_KID_PREFIX = "dev-"


class SettingsError(Exception):
    """Settings are missing or refused; the message names every variable involved."""


def is_local_url(url: str) -> bool:
    """True for URLs that point at this machine or a private test name (localhost, 127.0.0.0/8,
    ::1, 0.0.0.0, *.localhost, *.local, *.internal): what production refuses for a provider's
    API, since there it can only be a local stand-in."""
    host = (urlparse(url).hostname or "").lower()
    if not host or host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


class KitSettings(BaseSettings):
    """Settings every service has. Environment variable = field name in upper case."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    service_name: ClassVar[str] = "service"
    default_grpc_port: ClassVar[int] = 50050
    default_ops_port: ClassVar[int] = 9100
    default_http_port: ClassVar[int] = 8080

    app_env: Literal["dev", "test", "production"] = Field(
        "dev", description="dev | test | production; production refuses dev defaults."
    )
    log_level: str = Field("INFO", description="Root log level (JSON logs on stderr).")
    access_log: bool = Field(True, description="One JSON access-log line per RPC.")
    tracing_exporter: Literal["none", "otlp"] = Field(
        "none",
        description="Where spans go: none (the W3C trace context is still propagated and "
        "logged, nothing is recorded) or otlp (OTLP/HTTP protobuf to "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, default "
        "http://localhost:4318; the other standard OTEL_EXPORTER_OTLP_* variables apply).",
    )
    tracing_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces sampled (recorded when exporting); a call that "
        "arrives with a traceparent follows its caller's sampled flag.",
    )
    grpc_host: str = Field("127.0.0.1", description="gRPC bind address (0.0.0.0 in containers).")
    grpc_port: int | None = Field(
        None, description="gRPC port; default per service (50051-50054); 0 picks a free port."
    )
    ops_host: str = Field("127.0.0.1", description="Ops HTTP bind address (/metrics, /healthz).")
    ops_port: int | None = Field(
        None, description="Ops HTTP port; default per service (9101-9104); 0 picks a free port."
    )
    http_host: str = Field(
        "127.0.0.1", description="Public HTTP bind address (webhooks, static metadata)."
    )
    http_port: int | None = Field(
        None,
        description="Public HTTP port, used when the service serves webhooks or metadata; "
        "default per service (8081-8084); 0 picks a free port.",
    )
    database_url: SecretStr = Field(description="PostgreSQL URL (required).")
    db_schema: str | None = Field(None, description="Postgres schema; default the service name.")
    db_pool_min: int = Field(1, description="Minimum pooled Postgres connections.")
    db_pool_max: int = Field(10, description="Maximum pooled Postgres connections.")
    db_command_timeout_s: float = Field(10.0, description="Timeout of one SQL command.")
    db_connect_timeout_s: float = Field(
        30.0, description="How long start-up keeps trying to reach Postgres before exiting."
    )
    migrate_on_start: bool = Field(
        True, description="Apply pending migrations at start (advisory-locked; replica-safe)."
    )
    migrate_wait_s: float = Field(
        300.0,
        ge=0,
        description="With MIGRATE_ON_START=false (Kubernetes: the migration Job applies them): "
        "how long start-up waits for pending migrations to be applied before exiting.",
    )
    redis_url: SecretStr = Field(description="Redis URL (required).")
    jwt_issuers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEV_ISSUER],
        description="Accepted token issuers (JSON list or comma-separated).",
    )
    jwt_audience: str | None = Field(
        None, description="Audience this service accepts; default tickettoken.<service>."
    )
    jwt_public_keys: str = Field(
        "",
        description="Verification keys: comma-separated kid=path.pem, or a JWKS .json path. "
        "Empty in dev: a local dev key pair is generated under DEV_DIR.",
    )
    jwt_signing_key_file: str = Field(
        "", description="This service's private key (PEM) for outbound service tokens."
    )
    jwt_signing_kid: str = Field("", description="kid of JWT_SIGNING_KEY_FILE.")
    jwt_service_issuer: str = Field(
        DEV_ISSUER, description="iss of the service tokens this service mints."
    )
    jwt_leeway_s: int = Field(30, description="Clock skew allowed on exp/nbf.")
    service_token_ttl_s: int = Field(60, description="Lifetime of minted service tokens.")
    dev_dir: Path = Field(
        Path(".dev"), description="Dev-mode state (generated dev keys, embedded data)."
    )
    mesh_embedded: bool = Field(
        False, description="Set by the dev launcher when Postgres/Redis are the embedded ones."
    )
    shutdown_grace_s: float = Field(
        10.0, description="Drain time for in-flight RPCs after SIGTERM."
    )
    shutdown_delay_s: float = Field(
        0.0,
        description="Wait between NOT_SERVING and closing the listener (lets load balancers "
        "notice; set ~5 in Kubernetes).",
    )
    health_check_interval_s: float = Field(
        2.0, description="How often dependencies (Postgres, Redis) are checked for health."
    )
    idempotency_lock_s: float = Field(
        5.0,
        description="Seconds without a heartbeat after which a running request's idempotency "
        "key counts as abandoned (its holder died) and is taken over.",
    )
    idempotency_heartbeat_s: float = Field(
        1.0,
        description="How often a running idempotent request refreshes its key's lock (at most "
        "a third of IDEMPOTENCY_LOCK_S).",
    )
    idempotency_ttl_s: float = Field(86400.0, description="How long idempotency keys are kept.")
    idempotency_purge_interval_s: float = Field(
        300.0, description="How often expired idempotency keys are deleted."
    )
    outbox_retention_s: float = Field(
        7 * 86400.0, description="How long delivered outbox events are kept before purge."
    )
    outbox_purge_interval_s: float = Field(
        3600.0, description="How often delivered outbox events are purged."
    )
    gc_freeze_after_start: bool = Field(
        True,
        description="gc.freeze() once started: long-lived start-up objects leave the cyclic "
        "GC's scans (fewer, cheaper collections under load).",
    )
    max_concurrent_rpcs: int | None = Field(
        None, description="Cap on concurrent RPCs per process (excess get RESOURCE_EXHAUSTED)."
    )
    provider_policies: str = Field(
        "",
        description="Per-provider guard overrides as JSON, e.g. "
        '{"stripe": {"rate": 20}} (fields of meshkit.resilience.ProviderPolicy).',
    )
    expected_replicas: int = Field(
        2,
        description="Replicas of this service; while Redis is unreachable each replica keeps "
        "to its share of the provider limits.",
    )
    guard_key_prefix: str = Field(
        "guard",
        description="Prefix of the guards' Redis keys (limits and breakers are shared by every "
        "process using the same prefix; give each environment its own).",
    )
    guard_redis_timeout_s: float = Field(
        0.25, description="Timeout of one shared rate-limit / breaker decision in Redis."
    )
    grpc_client_timeout_s: float = Field(
        5.0, description="Timeout of outbound mesh calls made without an inbound deadline."
    )
    grpc_max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description="Servers close each client connection after about this long (GOAWAY, with "
        "+/-10 % jitter), so clients re-resolve the service's DNS name and spread their calls "
        "over replicas added since (0 = never).",
    )
    grpc_max_connection_age_grace_s: float = Field(
        30.0,
        ge=0,
        description="Time calls in flight on a connection closed for its age get to finish.",
    )
    grpc_dns_min_resolution_interval_s: float = Field(
        30.0,
        gt=0,
        description="Shortest interval between two DNS resolutions of a mesh target by a "
        "client channel (gRPC's own default is 30 s).",
    )
    payment_grpc_target: str = Field("127.0.0.1:50051", description="Address of payment.")
    nft_grpc_target: str = Field("127.0.0.1:50052", description="Address of nft.")
    notify_grpc_target: str = Field("127.0.0.1:50053", description="Address of notify.")
    integration_grpc_target: str = Field("127.0.0.1:50054", description="Address of integration.")

    @field_validator("provider_policies")
    @classmethod
    def _check_policies(cls, value: str) -> str:
        from meshkit.resilience import load_policies

        load_policies(value)  # raises ValueError naming every problem
        return value

    @model_validator(mode="after")
    def _check_idempotency_timing(self) -> KitSettings:
        if not 0 < self.idempotency_heartbeat_s <= self.idempotency_lock_s / 3:
            raise ValueError(
                "IDEMPOTENCY_HEARTBEAT_S must be positive and at most IDEMPOTENCY_LOCK_S / 3"
            )
        return self

    @field_validator("jwt_issuers", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    # --- derived values -------------------------------------------------------------------
    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def schema_name(self) -> str:
        return self.db_schema or self.service_name

    @property
    def audience(self) -> str:
        return self.jwt_audience or f"tickettoken.{self.service_name}"

    @property
    def grpc_targets(self) -> dict[str, str]:
        """Addresses of the mesh services, for outbound calls."""
        return {
            "payment": self.payment_grpc_target,
            "nft": self.nft_grpc_target,
            "notify": self.notify_grpc_target,
            "integration": self.integration_grpc_target,
        }

    @property
    def bind_grpc_port(self) -> int:
        return self.default_grpc_port if self.grpc_port is None else self.grpc_port

    @property
    def bind_http_port(self) -> int:
        return self.default_http_port if self.http_port is None else self.http_port

    @property
    def bind_ops_port(self) -> int:
        return self.default_ops_port if self.ops_port is None else self.ops_port

    def production_problems(self) -> list[str]:
        """Why these settings must not run in production; subclasses extend the list."""
        problems: list[str] = []
        if not self.jwt_public_keys:
            problems.append("JWT_PUBLIC_KEYS is empty (dev keys would be generated)")
        elif DEV_KID_PREFIX in self.jwt_public_keys or str(self.dev_dir) in self.jwt_public_keys:
            problems.append("JWT_PUBLIC_KEYS names a dev key")
        if DEV_ISSUER in self.jwt_issuers:
            problems.append(f"JWT_ISSUERS contains the dev issuer {DEV_ISSUER!r}")
        if not self.jwt_signing_key_file or not self.jwt_signing_kid:
            problems.append("JWT_SIGNING_KEY_FILE and JWT_SIGNING_KID are required")
        elif self.jwt_signing_kid.startswith(DEV_KID_PREFIX):
            problems.append("JWT_SIGNING_KID is a dev key id")
        if self.jwt_service_issuer == DEV_ISSUER:
            problems.append("JWT_SERVICE_ISSUER is the dev issuer")
        if self.mesh_embedded:
            problems.append("MESH_EMBEDDED is set (embedded Postgres/Redis are for dev only)")
        return problems


S = TypeVar("S", bound=KitSettings)


def _env_name(loc: tuple[Any, ...]) -> str:
    return str(loc[0]).upper() if loc else "?"


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Read settings from the environment (overrides win); raise SettingsError naming every
    missing or invalid variable at once, and every production refusal at once."""
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        missing = sorted({_env_name(e["loc"]) for e in exc.errors() if e["type"] == "missing"})
        invalid = sorted(
            {f"{_env_name(e['loc'])} ({e['msg']})" for e in exc.errors() if e["type"] != "missing"}
        )
        parts = []
        if missing:
            parts.append("missing required settings: " + ", ".join(missing))
        if invalid:
            parts.append("invalid settings: " + ", ".join(invalid))
        raise SettingsError(f"{cls.service_name}: " + "; ".join(parts)) from None
    if settings.is_production:
        problems = settings.production_problems()
        if problems:
            raise SettingsError(
                f"{cls.service_name}: APP_ENV=production refuses: " + "; ".join(problems)
            )
    return settings


def settings_table(cls: type[KitSettings]) -> list[tuple[str, str, str]]:
    """(VARIABLE, default, description) rows, for the README's settings list."""
    rows = []
    for name, info in cls.model_fields.items():
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = repr(info.default_factory())  # type: ignore[call-arg]
        else:
            default = repr(info.default)
        rows.append((name.upper(), default, info.description or ""))
    return rows
