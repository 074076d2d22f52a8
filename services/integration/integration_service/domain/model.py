"""The integration service's entities: providers, connections, credentials and what the
providers answer, as plain typed values.

A `Secret` holds a plaintext credential only while it is used: its `repr` and `str` are masked,
so a secret that reaches a log line or an exception message shows as `Secret('***')`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Provider(enum.StrEnum):
    """An outside provider (values: the lower-case names webhooks and settings use)."""

    STRIPE = "stripe"
    SQUARE = "square"
    MAILCHIMP = "mailchimp"
    QUICKBOOKS = "quickbooks"


class AuthKind(enum.StrEnum):
    OAUTH2 = "oauth2"
    API_KEY = "api_key"


class ConnectionStatus(enum.StrEnum):
    """CONNECTED works; NEEDS_REAUTH: the provider refused our grant; ERROR: the credentials work
    but the account cannot do what we need (e.g. missing scopes); DISCONNECTED: the credentials
    were destroyed (final)."""

    CONNECTED = "CONNECTED"
    NEEDS_REAUTH = "NEEDS_REAUTH"
    ERROR = "ERROR"
    DISCONNECTED = "DISCONNECTED"

    @property
    def failed(self) -> bool:
        return self in (ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.ERROR)


class EntityType(enum.StrEnum):
    CUSTOMER = "CUSTOMER"
    PRODUCT = "PRODUCT"
    ORDER = "ORDER"
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"
    INVOICE = "INVOICE"
    PAYOUT = "PAYOUT"
    INVENTORY = "INVENTORY"


class Direction(enum.StrEnum):
    PUSH = "PUSH"
    PULL = "PULL"
    BIDIRECTIONAL = "BIDIRECTIONAL"


class Secret:
    """A plaintext credential value that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def mask_hint(value: str, keep: int = 4) -> str:
    """The last `keep` characters of a key, for recognition ("…a1b2"); empty for short values."""
    return value[-keep:] if len(value) >= 4 * keep else ""


@dataclass(frozen=True, slots=True)
class Credential:
    """What the vault seals for one connection (plaintext only while it is used).

    OAuth: access token, refresh token (if any), token type; API key: the key. `extra` holds
    provider-specific secret values (none today)."""

    kind: AuthKind
    access_token: Secret = field(default_factory=lambda: Secret(""))
    refresh_token: Secret = field(default_factory=lambda: Secret(""))
    api_key: Secret = field(default_factory=lambda: Secret(""))
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    """The secret that verifies this connection's webhooks when it is per connection (Stripe's
    endpoint signing secret)."""

    @property
    def bearer(self) -> str:
        """The value an API call authenticates with."""
        return (self.api_key if self.kind is AuthKind.API_KEY else self.access_token).reveal()

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind.value,
            "access_token": self.access_token.reveal(),
            "refresh_token": self.refresh_token.reveal(),
            "api_key": self.api_key.reveal(),
            "webhook_secret": self.webhook_secret.reveal(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Credential:
        return cls(
            kind=AuthKind(str(data["kind"])),
            access_token=Secret(str(data.get("access_token", ""))),
            refresh_token=Secret(str(data.get("refresh_token", ""))),
            api_key=Secret(str(data.get("api_key", ""))),
            webhook_secret=Secret(str(data.get("webhook_secret", ""))),
        )


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a provider's token endpoint answered (code exchange or refresh), as values."""

    access_token: Secret
    refresh_token: Secret
    access_expires_at: datetime | None
    """None: the token never expires (Mailchimp)."""
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    account_id: str = ""
    """The merchant / realm / account the grant is for, when the token answer names it."""


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """Who the credentials belong to at the provider (from one cheap authenticated call)."""

    account_id: str
    account_name: str = ""
    api_base: str = ""
    """Where this account's API lives when it is per account (Mailchimp's datacenter)."""


@dataclass(frozen=True, slots=True)
class Connection:
    """A venue's connection to one provider account (credentials live in the vault)."""

    id: uuid.UUID
    venue_id: str
    provider: Provider
    auth_kind: AuthKind
    status: ConnectionStatus
    scopes: tuple[str, ...]
    external_account_id: str
    external_account_name: str
    credential_hint: str
    api_base: str
    settings: Mapping[str, Any]
    last_error_code: str
    last_error: str
    token_expires_at: datetime | None
    refresh_expires_at: datetime | None
    last_tested_at: datetime | None
    last_synced_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConnectionFilter:
    """ListConnections: the venues to look in (empty = every venue: admins only), the provider
    (None = all) and the states (empty = all)."""

    venue_ids: tuple[str, ...] = ()
    provider: Provider | None = None
    statuses: tuple[ConnectionStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who uses a credential, for the audit trail: a principal (user or service) or one of our
    own jobs, and the request that caused it."""

    subject: str
    request_id: str = ""
    venue_ids: frozenset[str] = frozenset()
    admin: bool = False

    def manages(self, venue_id: str) -> bool:
        return self.admin or venue_id in self.venue_ids


SYSTEM = Actor("svc:integration")
"""The service itself (background jobs)."""
