"""Error maps from a table: a service's domain errors → the kit's gRPC errors, in one place.

A service's domain raises its own typed errors (no kit import there); its error map, handed to
the kit as `ServiceRegistration(errors=...)`, says which status each of them means. Most maps are
a table, so this builds the function from one:

    to_mesh_error = ErrorTable(
        {
            errors.InvalidInput: InvalidArgument,
            errors.NotFound: NotFound,
            errors.Refused: FailedPrecondition,
            errors.StillRunning: (Aborted, "STILL_RUNNING"),
            errors.TryLater: Unavailable,
        },
        base=errors.ShopError,
    )

The entry of the nearest class in the exception's MRO wins (a subclass's entry overrides its
base's). An entry is a kit error class, or (class, reason). What the error carries is read by
attribute name, so domain errors need no kit types:

  message             the status message (default `str(exc)`)
  reason              ErrorInfo.reason when the entry names none (default: the kit class's)
  metadata or facts   ErrorInfo.metadata, a str → str mapping
  violations          BadRequest field violations: items with `field`, `description` (and an
                      optional `reason`)
  retry_after         RetryInfo, in seconds

An exception that is not a `base` (or has no entry) maps to None: the kit answers INTERNAL with
a generic message and logs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from meshkit.errors import FieldViolation, MeshError

__all__ = ["Entry", "ErrorTable"]

Entry: TypeAlias = "type[MeshError] | tuple[type[MeshError], str]"


def _entry(value: Entry) -> tuple[type[MeshError], str | None]:
    if isinstance(value, tuple):
        return value[0], value[1]
    return value, None


def _violations(exc: Exception) -> tuple[FieldViolation, ...]:
    items: Any = getattr(exc, "violations", ()) or ()
    return tuple(
        FieldViolation(str(v.field), str(v.description), str(getattr(v, "reason", "") or ""))
        for v in items
    )


class ErrorTable:
    """An `ErrorMap` (meshkit.interceptor) built from a table (module docstring)."""

    def __init__(
        self, table: Mapping[type[Exception], Entry], *, base: type[Exception] = Exception
    ) -> None:
        self._table = {cls: _entry(value) for cls, value in table.items()}
        self._base = base
        self._resolved: dict[type[Exception], tuple[type[MeshError], str | None] | None] = {}

    def _lookup(self, cls: type[Exception]) -> tuple[type[MeshError], str | None] | None:
        if cls not in self._resolved:
            self._resolved[cls] = next(
                (self._table[c] for c in cls.__mro__ if c in self._table), None
            )
        return self._resolved[cls]

    def __call__(self, exc: Exception) -> MeshError | None:
        if not isinstance(exc, self._base):
            return None
        entry = self._lookup(type(exc))
        if entry is None:
            return None
        kind, reason = entry
        metadata = getattr(exc, "metadata", None) or getattr(exc, "facts", None) or {}
        retry_after = getattr(exc, "retry_after", None)
        return kind(
            str(getattr(exc, "message", "") or exc),
            reason=reason or getattr(exc, "reason", None) or None,
            metadata={str(k): str(v) for k, v in dict(metadata).items()},
            field_violations=_violations(exc),
            retry_after=float(retry_after) if retry_after is not None else None,
        )
