"""The error map (`ServiceRegistration.errors`): the one place where the integration service's
domain errors become gRPC statuses and reasons. Every concrete `IntegrationError` has an entry
(a unit test holds that), each category its fallback."""

from __future__ import annotations

from integration_service.domain import errors as e
from integration_service.domain import sync_errors as se
from meshkit.errormap import Entry, ErrorTable
from meshkit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

MAP: dict[type[Exception], Entry] = {
    e.InvalidInput: (InvalidArgument, "INVALID_REQUEST"),
    e.WrongAuthType: (InvalidArgument, "WRONG_AUTH_TYPE"),
    e.RedirectNotAllowed: (InvalidArgument, "REDIRECT_URI_NOT_ALLOWED"),
    e.UnknownScopes: (InvalidArgument, "UNKNOWN_SCOPES"),
    e.OAuthStateRefused: (InvalidArgument, "OAUTH_STATE_INVALID"),
    e.OAuthStateUnknown: (InvalidArgument, "OAUTH_STATE_UNKNOWN"),
    e.OAuthStateExpired: (InvalidArgument, "OAUTH_STATE_EXPIRED"),
    e.OAuthStateUsed: (InvalidArgument, "OAUTH_STATE_ALREADY_USED"),
    e.OAuthDenied: (InvalidArgument, "OAUTH_DENIED"),
    e.OAuthCodeRefused: (InvalidArgument, "OAUTH_CODE_REFUSED"),
    e.MissingRedirectParam: (InvalidArgument, "OAUTH_PARAMETER_MISSING"),
    e.ApiKeyRefused: (InvalidArgument, "API_KEY_REFUSED"),
    e.WebhookUnverified: (InvalidArgument, "WEBHOOK_SIGNATURE_INVALID"),
    e.WebhookStale: (InvalidArgument, "WEBHOOK_STALE"),
    e.WebhookMalformed: (InvalidArgument, "WEBHOOK_MALFORMED"),
    e.InvalidMappings: (InvalidArgument, "INVALID_FIELD_MAPPINGS"),
    e.ConnectionNotFound: (NotFound, "CONNECTION_NOT_FOUND"),
    e.VenueNotManaged: (PermissionDenied, "VENUE_NOT_MANAGED"),
    e.OAuthStateOtherCaller: (PermissionDenied, "OAUTH_STATE_OTHER_VENUE"),
    e.ProviderNotConfigured: (FailedPrecondition, "PROVIDER_NOT_CONFIGURED"),
    e.ConnectionDisconnected: (FailedPrecondition, "CONNECTION_DISCONNECTED"),
    e.NeedsReauth: (FailedPrecondition, "CONNECTION_NEEDS_REAUTH"),
    e.MappingsVersionMismatch: (FailedPrecondition, "FIELD_MAPPINGS_VERSION_MISMATCH"),
    e.GrantRefused: (FailedPrecondition, "PROVIDER_GRANT_REFUSED"),
    e.ProviderRejected: (FailedPrecondition, "PROVIDER_REJECTED"),
    e.RefreshBusy: (Unavailable, "TOKEN_REFRESH_IN_PROGRESS"),
    e.CredentialUnavailable: (Unavailable, "VAULT_UNAVAILABLE"),
    e.WebhookNotProcessed: (Unavailable, "WEBHOOK_PROCESSING_FAILED"),
    e.OAuthStateBusy: (Unavailable, "OAUTH_STATE_UNAVAILABLE"),
    se.SyncJobNotFound: (NotFound, "SYNC_JOB_NOT_FOUND"),
    se.EntityNotSynced: (InvalidArgument, "ENTITY_NOT_SYNCED"),
    se.ConnectionNotSyncable: (FailedPrecondition, "CONNECTION_NOT_SYNCABLE"),
    # The categories, for an error added without an entry of its own.
    e.NotFound: (NotFound, "NOT_FOUND"),
    e.Forbidden: (PermissionDenied, "PERMISSION_DENIED"),
    e.Refused: (FailedPrecondition, "FAILED_PRECONDITION"),
    e.TryLater: (Unavailable, "UNAVAILABLE"),
}

to_mesh_error = ErrorTable(MAP, base=e.IntegrationError)
