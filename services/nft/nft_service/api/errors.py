"""The service's error map (registered with the kit as `ServiceRegistration.errors`): the one
place where the nft domain's errors become gRPC statuses. Each domain error carries its reason,
metadata, field violations and retry hint; the table says which status its kind of error is."""

from __future__ import annotations

from meshkit import errors as kit
from meshkit.errormap import ErrorTable
from nft_service.domain import errors as domain

to_mesh_error = ErrorTable(
    {
        domain.InvalidInput: kit.InvalidArgument,
        domain.NotFound: kit.NotFound,
        domain.Forbidden: kit.PermissionDenied,
        domain.Refused: kit.FailedPrecondition,
        domain.TryLater: kit.Unavailable,
        # Not final, but the request itself is fine: ABORTED ("retry the same request")
        # releases the idempotency key, where FAILED_PRECONDITION would be stored for good.
        domain.TicketNotMintedYet: kit.Aborted,
    },
    base=domain.NftError,
)
