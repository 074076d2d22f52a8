"""Reading the kit's error details in tests: the `google.rpc.Status` a failed call carries.

with pytest.raises(grpc.aio.AioRpcError) as info:
    await stub.CreatePayment(request, metadata=md)
assert reason(info.value) == "INVALID_REQUEST"
assert ("currency", "...") in violations(info.value)
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "detail",
    "details",
    "error_info",
    "reason",
    "retry_delay",
    "status_of",
    "violations",
]

M = TypeVar("M", bound=Message)


def status_of(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status in the error's trailers (`grpc-status-details-bin`)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError("no grpc-status-details-bin in trailers")


def details(source: grpc.aio.AioRpcError | status_pb2.Status, cls: type[M]) -> list[M]:
    """Every detail of type `cls` in the status (of an error, or a status itself)."""
    status = source if isinstance(source, status_pb2.Status) else status_of(source)
    found: list[M] = []
    for packed in status.details:
        if packed.Is(cls.DESCRIPTOR):
            item = cls()
            packed.Unpack(item)
            found.append(item)
    return found


def detail(source: grpc.aio.AioRpcError | status_pb2.Status, cls: type[M]) -> M | None:
    """The first detail of type `cls`, or None."""
    found = details(source, cls)
    return found[0] if found else None


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The error's ErrorInfo (the kit always sends exactly one)."""
    info = detail(err, error_details_pb2.ErrorInfo)
    if info is None:
        raise AssertionError("no ErrorInfo in the status")
    return info


def reason(err: grpc.aio.AioRpcError) -> str:
    """ErrorInfo.reason of the error."""
    return str(error_info(err).reason)


def violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) of every BadRequest field violation; empty when there is none."""
    bad: Any = detail(err, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad.field_violations] if bad else []


def retry_delay(err: grpc.aio.AioRpcError) -> float | None:
    """RetryInfo's delay in seconds, None when the error carries no RetryInfo (or no status
    details at all, as a transport failure)."""
    if not any(key == "grpc-status-details-bin" for key, _ in err.trailing_metadata() or ()):
        return None
    retry = detail(err, error_details_pb2.RetryInfo)
    if retry is None:
        return None
    return float(retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)
