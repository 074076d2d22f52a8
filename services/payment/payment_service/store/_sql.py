"""Small SQL helpers shared by the store modules."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from payment_service.domain.settlement import Value


def lock(for_update: bool) -> str:
    """The row-lock clause of a SELECT."""
    return " FOR UPDATE" if for_update else ""


def assignments(
    changes: Mapping[str, Value], allowed: Collection[str], *, first: int
) -> tuple[str, list[Value]]:
    """`col = $n, ...` for `changes` (column names checked against `allowed`), numbered from
    `first`, and their values in order."""
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=first))
    return sets, list(changes.values())
