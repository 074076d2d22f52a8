"""Typed error hierarchy for services, and its mapping to gRPC status in exactly one place.

Domain code raises these (no grpc imports needed beyond this module); the kit's interceptor turns
them into a canonical status code with `google.rpc` details: always one ErrorInfo (AIP-193), plus
BadRequest field violations for bad input and RetryInfo when retrying later can help.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: `field` is the request path (e.g. `line_items[0].quantity`); `reason` the
    rule that failed (e.g. `string.uuid`), when known."""

    field: str
    description: str
    reason: str = ""


class MeshError(Exception):
    """Base of every error that is meant to reach a client with a specific status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.reason!r}, {self.message!r})"


class InvalidArgument(MeshError):
    """The request is malformed; field violations say which fields and why. Changes nothing."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(MeshError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(MeshError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(MeshError):
    """The system is not in a state where the request can run (e.g. invalid state transition)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class OutOfRange(MeshError):
    code = grpc.StatusCode.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class Aborted(MeshError):
    """A concurrency conflict; the client should retry the same request (RetryInfo says when)."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class Unauthenticated(MeshError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(MeshError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class ResourceExhausted(MeshError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(MeshError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(MeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(MeshError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class Internal(MeshError):
    """An unexpected failure. The message sent to clients is generic; details stay in the logs."""

    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


def invalid_argument(
    violations: Iterable[FieldViolation], message: str | None = None
) -> InvalidArgument:
    """Build an INVALID_ARGUMENT error from a list of field violations."""
    vs = tuple(violations)
    text = message or "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in vs)
    return InvalidArgument(text, field_violations=vs)


def _pack(msg: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)  # type: ignore[arg-type]
    return packed


def _duration(seconds: float) -> duration_pb2.Duration:
    seconds = max(0.0, seconds)
    whole = math.floor(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


# The status travels in trailing metadata (grpc-message, grpc-status-details-bin), which clients
# refuse above 8 KiB (soft, probabilistically) and 16 KiB (hard) by default: a client that cannot
# read the error gets RESOURCE_EXHAUSTED instead of it. Bad input may be huge (a 60 kB map key
# ends up in a field path), so every text is capped and at most MAX_VIOLATIONS are sent; the
# total stays well under 8 KiB.
MAX_MESSAGE_CHARS = 512
MAX_VIOLATIONS = 10
MAX_FIELD_CHARS = 128
MAX_DESCRIPTION_CHARS = 160
MAX_REASON_CHARS = 64
MAX_METADATA_ENTRIES = 16
MAX_METADATA_CHARS = 128


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a marker when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def to_status_proto(err: MeshError, domain: str) -> status_pb2.Status:
    """`google.rpc.Status` for an error: ErrorInfo always, BadRequest / RetryInfo as they apply."""
    metadata = {
        clip(k, MAX_METADATA_CHARS): clip(v, MAX_METADATA_CHARS)
        for k, v in list(err.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=clip(err.reason, MAX_REASON_CHARS), domain=domain, metadata=metadata
            )
        )
    ]
    if err.field_violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=clip(v.field, MAX_FIELD_CHARS),
                            description=clip(v.description, MAX_DESCRIPTION_CHARS),
                            reason=clip(v.reason, MAX_REASON_CHARS),
                        )
                        for v in err.field_violations[:MAX_VIOLATIONS]
                    ]
                )
            )
        )
    if err.retry_after is not None:
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=_duration(err.retry_after))))
    return status_pb2.Status(
        code=err.code.value[0], message=clip(err.message, MAX_MESSAGE_CHARS), details=details
    )


def to_grpc_status(err: MeshError, domain: str) -> grpc.Status:
    """The status object `context.abort_with_status` takes (carries grpc-status-details-bin)."""
    status: grpc.Status = rpc_status.to_status(status_for(err, domain))
    return status


CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}
assert CODE_BY_NUMBER[code_pb2.INVALID_ARGUMENT] is grpc.StatusCode.INVALID_ARGUMENT


class ReplayedError(MeshError):
    """An error stored by the idempotency layer, replayed verbatim (same status and details)."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status_proto = status
        self.code = CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                self.reason = info.reason


def status_for(err: MeshError, domain: str) -> status_pb2.Status:
    """The status proto for any MeshError, replayed ones included (used for storage and abort)."""
    if isinstance(err, ReplayedError):
        return err.status_proto
    return to_status_proto(err, domain)
