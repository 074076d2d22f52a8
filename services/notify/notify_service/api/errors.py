"""The error map (`ServiceRegistration.errors`): the one place where the notify service's domain
errors become gRPC statuses and reasons. Every concrete `NotifyError` has an entry (a unit test
holds that), each category its fallback."""

from __future__ import annotations

from meshkit.errormap import Entry, ErrorTable
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from notify_service.domain import errors as e

MAP: dict[type[Exception], Entry] = {
    e.InvalidInput: (InvalidArgument, "INVALID_REQUEST"),
    e.UnknownTemplate: (InvalidArgument, "TEMPLATE_NOT_FOUND"),
    e.MissingVariables: (InvalidArgument, "TEMPLATE_VARIABLES_MISSING"),
    e.TemplateBroken: (InvalidArgument, "TEMPLATE_INVALID"),
    e.BadAddress: (InvalidArgument, "INVALID_DESTINATION"),
    e.WebhookUnverified: (InvalidArgument, "WEBHOOK_SIGNATURE_INVALID"),
    e.WebhookStale: (InvalidArgument, "WEBHOOK_STALE"),
    e.NotificationNotFound: (NotFound, "NOTIFICATION_NOT_FOUND"),
    e.TemplateNotFound: (NotFound, "TEMPLATE_NOT_FOUND"),
    e.NotYours: (PermissionDenied, "NOT_YOURS"),
    e.ChannelNotConfigured: (FailedPrecondition, "CHANNEL_NOT_CONFIGURED"),
    e.ProviderNotConfigured: (FailedPrecondition, "PROVIDER_NOT_CONFIGURED"),
    e.TemplateVersionMismatch: (FailedPrecondition, "TEMPLATE_VERSION_MISMATCH"),
    e.TemplateChannelMismatch: (FailedPrecondition, "TEMPLATE_CHANNEL_MISMATCH"),
    e.WebhookNotProcessed: (Unavailable, "WEBHOOK_PROCESSING_FAILED"),
    e.DedupRace: (Aborted, "DEDUP_RACE"),
    # The categories, for an error added without an entry of its own.
    e.NotFound: (NotFound, "NOT_FOUND"),
    e.Forbidden: (PermissionDenied, "PERMISSION_DENIED"),
    e.Refused: (FailedPrecondition, "FAILED_PRECONDITION"),
    e.TryLater: (Unavailable, "UNAVAILABLE"),
}

to_mesh_error = ErrorTable(MAP, base=e.NotifyError)
