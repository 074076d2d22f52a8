"""The provider catalogue (ListProviders): how each provider connects, its scopes and token
lifetimes, and what the sync engine moves to and from it.

| provider | connect | tokens |
| --- | --- | --- |
| Square | OAuth code flow + PKCE (S256) | access 30 days; refresh at least every 7 days, single-use with PKCE (rotating) |
| QuickBooks | OAuth 2 | access 1 h; refresh 100 days, rotating: the newest is always kept |
| Mailchimp | OAuth | never expire; the datacenter comes from the metadata endpoint |
| Stripe | a restricted API key (ConnectWithApiKey) | — |

Limits are not facts of the catalogue: they are the guard policies in force (the providers'
published limits with headroom, `PROVIDER_POLICIES` overriding), read where the catalogue is
served.
"""  # noqa: E501

from __future__ import annotations

from dataclasses import dataclass

from integration_service.domain.errors import UnknownScopes
from integration_service.domain.model import AuthKind, Direction, EntityType, Provider

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Capability:
    """An entity type a provider syncs, which ways, and whether changed-since pulls work."""

    entity_type: EntityType
    directions: tuple[Direction, ...]
    incremental: bool = True


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What the service knows about one provider (independent of any deployment)."""

    provider: Provider
    display_name: str
    auth_kind: AuthKind
    default_scopes: tuple[str, ...]
    available_scopes: tuple[str, ...]
    capabilities: tuple[Capability, ...]
    supports_webhooks: bool
    supports_pkce: bool
    access_token_lifetime_s: int
    """0: never expires (or no token)."""
    refresh_token_lifetime_s: int
    """0: no refresh token, or one that does not expire."""
    refresh_token_rotates: bool
    limit_scope: str
    """What the provider counts its limits per."""
    api_host_note: str = ""
    scope_separator: str = " "

    def scopes_for(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        """The scopes to request: the defaults when none are given; unknown ones refused."""
        if not requested:
            return self.default_scopes
        unknown = [s for s in requested if s not in self.available_scopes]
        if unknown:
            raise UnknownScopes(unknown)
        return requested


_PUSH_PULL = (Direction.PUSH, Direction.PULL)

SQUARE_SCOPES = (
    "MERCHANT_PROFILE_READ",
    "ITEMS_READ",
    "ITEMS_WRITE",
    "CUSTOMERS_READ",
    "CUSTOMERS_WRITE",
    "INVENTORY_READ",
    "INVENTORY_WRITE",
)
QUICKBOOKS_ACCOUNTING = "com.intuit.quickbooks.accounting"

CATALOG: dict[Provider, ProviderSpec] = {
    Provider.SQUARE: ProviderSpec(
        provider=Provider.SQUARE,
        display_name="Square",
        auth_kind=AuthKind.OAUTH2,
        default_scopes=SQUARE_SCOPES,
        available_scopes=SQUARE_SCOPES,
        capabilities=(
            Capability(EntityType.PRODUCT, _PUSH_PULL),
            Capability(EntityType.CUSTOMER, _PUSH_PULL),
            Capability(EntityType.INVENTORY, _PUSH_PULL),
        ),
        supports_webhooks=True,
        supports_pkce=True,
        access_token_lifetime_s=30 * DAY_S,
        refresh_token_lifetime_s=7 * DAY_S,
        refresh_token_rotates=True,
        limit_scope="application",
    ),
    Provider.QUICKBOOKS: ProviderSpec(
        provider=Provider.QUICKBOOKS,
        display_name="QuickBooks Online",
        auth_kind=AuthKind.OAUTH2,
        default_scopes=(QUICKBOOKS_ACCOUNTING,),
        available_scopes=(QUICKBOOKS_ACCOUNTING,),
        capabilities=(
            Capability(EntityType.PRODUCT, _PUSH_PULL),
            Capability(EntityType.CUSTOMER, _PUSH_PULL),
            Capability(EntityType.PAYMENT, (Direction.PUSH,), incremental=False),
            Capability(EntityType.REFUND, (Direction.PUSH,), incremental=False),
        ),
        supports_webhooks=True,
        supports_pkce=False,
        access_token_lifetime_s=3600,
        refresh_token_lifetime_s=100 * DAY_S,
        refresh_token_rotates=True,
        limit_scope="company (realm)",
    ),
    Provider.MAILCHIMP: ProviderSpec(
        provider=Provider.MAILCHIMP,
        display_name="Mailchimp",
        auth_kind=AuthKind.OAUTH2,
        default_scopes=(),
        available_scopes=(),
        capabilities=(Capability(EntityType.CUSTOMER, _PUSH_PULL),),
        supports_webhooks=True,
        supports_pkce=False,
        access_token_lifetime_s=0,
        refresh_token_lifetime_s=0,
        refresh_token_rotates=False,
        limit_scope="account",
        api_host_note="per-account datacenter (api_endpoint) from the OAuth metadata endpoint",
    ),
    Provider.STRIPE: ProviderSpec(
        provider=Provider.STRIPE,
        display_name="Stripe",
        auth_kind=AuthKind.API_KEY,
        default_scopes=(),
        available_scopes=(),
        capabilities=(Capability(EntityType.PRODUCT, _PUSH_PULL),),
        supports_webhooks=True,
        supports_pkce=False,
        access_token_lifetime_s=0,
        refresh_token_lifetime_s=0,
        refresh_token_rotates=False,
        limit_scope="account",
    ),
}


def spec(provider: Provider) -> ProviderSpec:
    return CATALOG[provider]
