"""The integration service's errors: a small typed hierarchy, with no transport in it.

Use cases raise these; `api/errors.py` (the service's error map, registered with the kit) is the
one place that turns them into gRPC statuses. The base class says what kind of answer it is:

  InvalidInput  the request, as sent, breaks a rule the contract cannot state (field paths);
                nothing was stored or sent
  NotFound      the thing asked for does not exist (or the caller may not know it does)
  Forbidden     the caller may not do this
  Refused       the system is not in a state where this can succeed as asked
  TryLater      a transient condition: the same request may succeed later
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field: its path in the request and what is wrong with it."""

    field: str
    description: str


class IntegrationError(Exception):
    """Base of every error the integration service means a client to see."""

    reason: ClassVar[str] = "INTEGRATION_ERROR"
    """Stable machine-readable cause (google.rpc.ErrorInfo.reason)."""

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after


# -- bad input --------------------------------------------------------------------------------


class InvalidInput(IntegrationError):
    reason = "INVALID_REQUEST"

    def __init__(self, violations: Sequence[Violation], message: str | None = None) -> None:
        super().__init__(
            message
            or "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in violations)
        )
        self.violations = tuple(violations)


def raise_if(violations: Sequence[Violation]) -> None:
    if violations:
        raise InvalidInput(violations)


class WrongAuthType(InvalidInput):
    """StartOAuth for an API-key provider, or ConnectWithApiKey for an OAuth one."""

    reason = "WRONG_AUTH_TYPE"

    def __init__(self, provider: str, expected: str) -> None:
        super().__init__(
            [Violation("provider", f"{provider} connects with {expected}")],
        )


class RedirectNotAllowed(InvalidInput):
    reason = "REDIRECT_URI_NOT_ALLOWED"

    def __init__(self) -> None:
        super().__init__([Violation("redirect_uri", "not on this service's allow-list")])


class UnknownScopes(InvalidInput):
    reason = "UNKNOWN_SCOPES"

    def __init__(self, scopes: Sequence[str]) -> None:
        super().__init__(
            [Violation("scopes", f"not offered by the provider: {', '.join(sorted(scopes))}")]
        )


class OAuthStateRefused(InvalidInput):
    """CompleteOAuth with a state we cannot accept: nothing is stored, nothing is exchanged."""

    reason = "OAUTH_STATE_INVALID"

    def __init__(self, description: str) -> None:
        super().__init__([Violation("state", description)])


class OAuthStateUnknown(OAuthStateRefused):
    """Never issued here (forged, mistyped, or from another deployment)."""

    reason = "OAUTH_STATE_UNKNOWN"

    def __init__(self) -> None:
        super().__init__("not a state this service issued")


class OAuthStateExpired(OAuthStateRefused):
    reason = "OAUTH_STATE_EXPIRED"

    def __init__(self) -> None:
        super().__init__("expired: start the authorization again")


class OAuthStateUsed(OAuthStateRefused):
    """A replay: the state was already completed (or is being completed right now)."""

    reason = "OAUTH_STATE_ALREADY_USED"

    def __init__(self) -> None:
        super().__init__("already used: every authorization completes once")


class OAuthDenied(InvalidInput):
    """The provider sent the admin back with `error` (e.g. access_denied): nothing to store."""

    reason = "OAUTH_DENIED"

    def __init__(self, error: str) -> None:
        super().__init__(
            [Violation("error", f"the provider answered {error!r}; nothing was connected")]
        )


class OAuthCodeRefused(InvalidInput):
    """The provider refused the authorization code (used, expired, or for another client)."""

    reason = "OAUTH_CODE_REFUSED"

    def __init__(self, detail: str = "") -> None:
        text = "the provider refused the authorization code"
        super().__init__([Violation("code", text + (f" ({detail})" if detail else ""))])


class MissingRedirectParam(InvalidInput):
    reason = "OAUTH_PARAMETER_MISSING"

    def __init__(self, name: str) -> None:
        super().__init__([Violation(f'extra_params["{name}"]', "required by this provider")])


class ApiKeyRefused(InvalidInput):
    """The provider refused the API key (unknown, revoked, lacking permissions, test mode in
    production): nothing is stored."""

    reason = "API_KEY_REFUSED"

    def __init__(self, description: str) -> None:
        super().__init__([Violation("api_key", description)])


class WebhookUnverified(InvalidInput):
    """A webhook that is forged, malformed or for another endpoint: refused, changes nothing."""

    reason = "WEBHOOK_SIGNATURE_INVALID"

    def __init__(self, field: str, description: str) -> None:
        super().__init__([Violation(field, description)])


class WebhookStale(WebhookUnverified):
    """Signed, but longer ago than the tolerance allows (a replay outside the window)."""

    reason = "WEBHOOK_STALE"


class WebhookMalformed(WebhookUnverified):
    reason = "WEBHOOK_MALFORMED"


class InvalidMappings(InvalidInput):
    """SetFieldMappings with a set that cannot be applied (unknown field, incompatible types,
    a bad constant, format or table): nothing is stored."""

    reason = "INVALID_FIELD_MAPPINGS"


# -- not found / forbidden --------------------------------------------------------------------


class NotFound(IntegrationError):
    reason = "NOT_FOUND"


class ConnectionNotFound(NotFound):
    reason = "CONNECTION_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("no such connection")


class Forbidden(IntegrationError):
    reason = "PERMISSION_DENIED"


class VenueNotManaged(Forbidden):
    reason = "VENUE_NOT_MANAGED"

    def __init__(self, venue_id: str) -> None:
        super().__init__(
            f"the caller does not manage venue {venue_id}", metadata={"venue_id": venue_id}
        )


class OAuthStateOtherCaller(Forbidden):
    """The state belongs to an authorization another venue (or admin) started."""

    reason = "OAUTH_STATE_OTHER_VENUE"

    def __init__(self) -> None:
        super().__init__(
            "this authorization was started for another venue or by another caller; "
            "nothing was connected"
        )


# -- refused ----------------------------------------------------------------------------------


class Refused(IntegrationError):
    reason = "FAILED_PRECONDITION"


class ProviderNotConfigured(Refused):
    reason = "PROVIDER_NOT_CONFIGURED"

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"{provider} is not configured in this deployment (its app credentials are missing)",
            metadata={"provider": provider},
        )


class ConnectionDisconnected(Refused):
    reason = "CONNECTION_DISCONNECTED"

    def __init__(self) -> None:
        super().__init__("the connection is disconnected; its credentials were destroyed")


class NeedsReauth(Refused):
    """The provider refused our grant: nothing works until the admin authorizes again."""

    reason = "CONNECTION_NEEDS_REAUTH"

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the provider refused this connection's authorization; authorize again"
            + (f" ({detail})" if detail else "")
        )


class MappingsVersionMismatch(Refused):
    """SetFieldMappings with an expected_version that is not the stored one (someone else
    changed the set since it was read)."""

    reason = "FIELD_MAPPINGS_VERSION_MISMATCH"

    def __init__(self, expected: int, stored: int) -> None:
        super().__init__(
            f"the field mappings are at version {stored}, not {expected}: read them again",
            metadata={"expected_version": str(expected), "version": str(stored)},
        )


# -- try later --------------------------------------------------------------------------------


class TryLater(IntegrationError):
    reason = "UNAVAILABLE"


class RefreshBusy(TryLater):
    """Another replica is refreshing this connection's token and did not finish in time."""

    reason = "TOKEN_REFRESH_IN_PROGRESS"

    def __init__(self) -> None:
        super().__init__("the connection's token is being refreshed; retry", retry_after=1.0)


class CredentialUnavailable(TryLater):
    """The key-encryption key could not be reached (KMS down): nothing changed."""

    reason = "VAULT_UNAVAILABLE"

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the credential vault is unavailable" + (f" ({detail})" if detail else ""),
            retry_after=2.0,
        )


class WebhookNotProcessed(TryLater):
    """Processing a verified webhook failed and changed nothing; the provider delivers again."""

    reason = "WEBHOOK_PROCESSING_FAILED"

    def __init__(self) -> None:
        super().__init__("the webhook could not be processed; retry", retry_after=5.0)


class OAuthStateBusy(TryLater):
    reason = "OAUTH_STATE_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("the authorization state store is unavailable; retry", retry_after=1.0)


# -- what adapters report (turned into connection states by the use cases) --------------------


class GrantRefused(Refused):
    """The provider refused our grant (`invalid_grant` on refresh, a revoked or unknown token):
    only a new authorization helps. `code` is the provider's (e.g. "invalid_grant"). Use cases
    turn it into NEEDS_REAUTH; should one reach a client it is FAILED_PRECONDITION."""

    reason = "PROVIDER_GRANT_REFUSED"

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"the provider refused the grant ({code})")
        self.code = code
        self.detail = detail


class ProviderRejected(Refused):
    """The provider answered a call with a client error that is not about our grant (e.g. a
    missing scope); `code` is stable, `detail` safe to show."""

    reason = "PROVIDER_REJECTED"

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(
            f"the provider refused the call ({code})" + (f": {detail}" if detail else "")
        )
        self.code = code
        self.detail = detail


# -- the vault's integrity failure (never shown to a client as such) --------------------------


class CredentialCorrupt(Exception):
    """A sealed credential failed authentication (tampered ciphertext, wrong associated data or
    key). Not an IntegrationError: the kit answers INTERNAL and the details stay in the logs."""

    reason: ClassVar[str] = "CREDENTIAL_CORRUPT"
