"""Error maps built from a table (meshkit.errormap): nearest class wins, details read by name."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from meshkit.errormap import ErrorTable
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    to_status_proto,
)


@dataclass(frozen=True)
class Bad:
    field: str
    description: str


class ShopError(Exception):
    def __init__(self, message: str, **carried: object) -> None:
        super().__init__(message)
        self.message = message
        for name, value in carried.items():
            setattr(self, name, value)


class InvalidInput(ShopError):
    pass


class Missing(ShopError):
    reason = "THING_NOT_FOUND"


class Refused(ShopError):
    pass


class StillRunning(Refused):
    pass


class TryLater(ShopError):
    pass


MAP = ErrorTable(
    {
        InvalidInput: InvalidArgument,
        Missing: NotFound,
        Refused: (FailedPrecondition, "REFUSED"),
        StillRunning: (Aborted, "STILL_RUNNING"),
        TryLater: Unavailable,
    },
    base=ShopError,
)


def test_the_nearest_class_in_the_mro_wins() -> None:
    refused = MAP(Refused("no"))
    assert isinstance(refused, FailedPrecondition) and refused.reason == "REFUSED"
    running = MAP(StillRunning("later"))
    assert running is not None and running.code is grpc.StatusCode.ABORTED
    assert running.reason == "STILL_RUNNING"


def test_details_are_read_from_the_error() -> None:
    bad = MAP(InvalidInput("bad", violations=[Bad("items[1].qty", "must be positive")]))
    assert bad is not None and bad.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("items[1].qty", "must be positive")
    ]
    missing = MAP(Missing("no such thing", metadata={"id": 7}))
    assert missing is not None and missing.reason == "THING_NOT_FOUND"
    assert missing.metadata == {"id": "7"} and missing.message == "no such thing"
    later = MAP(TryLater("busy", retry_after=2, facts={"queue": "full"}))
    assert later is not None and later.retry_after == 2.0 and later.metadata == {"queue": "full"}
    status = to_status_proto(later, "tickettoken.shop")
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0] and len(status.details) == 2


def test_errors_that_are_not_ours_are_left_to_the_kit() -> None:
    assert MAP(ValueError("bug")) is None
    assert MAP(ShopError("no entry for the base itself")) is None
