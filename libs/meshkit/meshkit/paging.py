"""Pagination for List RPCs (AIP-158): page sizes and opaque page tokens bound to their query.

    page = Page.of(request)                      # size, and the cursor to continue after
    rows = await store.list(..., after=page.after, limit=page.size + 1)
    items, token = page.cut(rows, key=lambda r: (r.created_us, str(r.id)))
    return Response(items=[to_proto(r) for r in items], next_page_token=token)

A token carries the last row's sort key and a fingerprint of the query that produced it: the
request without `page_size` and `page_token`, plus the caller. Reusing it with another filter or by
another caller is INVALID_ARGUMENT on `page_token` instead of a silently wrong page. Tokens are
not secret (the filter is applied again on every page, so a forged cursor only moves within what
the caller may see anyway).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from meshkit.context import current_call
from meshkit.errors import FieldViolation, InvalidArgument

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "Cursor", "Page"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_TOKEN_FIELD = "page_token"  # noqa: S105 - a field name, not a secret
_SIZE_FIELD = "page_size"
_VERSION = 1

Cursor = tuple[str | int, ...]
R = TypeVar("R")


def _query_fingerprint(request: Message, scope: str) -> str:
    query = type(request)()
    query.CopyFrom(request)
    for name in (_TOKEN_FIELD, _SIZE_FIELD):
        if name in query.DESCRIPTOR.fields_by_name:
            query.ClearField(name)
    call = current_call()
    principal = call.principal.subject if call is not None else ""
    digest = hashlib.sha256()
    for part in (query.DESCRIPTOR.full_name, scope, principal):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(query.SerializeToString(deterministic=True))
    return digest.hexdigest()[:24]


def _bad_token(description: str) -> InvalidArgument:
    return InvalidArgument(
        f"page_token: {description}",
        reason="INVALID_PAGE_TOKEN",
        field_violations=[FieldViolation(_TOKEN_FIELD, description, "page_token.valid")],
    )


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    """One page of a List request: how many rows, and the cursor to continue after."""

    size: int
    after: Cursor | None
    fingerprint: str

    @classmethod
    def of(
        cls,
        request: Message,
        *,
        default_size: int = DEFAULT_PAGE_SIZE,
        max_size: int = MAX_PAGE_SIZE,
        scope: str = "",
    ) -> Page[R]:
        """Read `page_size` (0 → default, capped at max) and `page_token` from `request`.

        `scope` separates token spaces of one request type whose meaning differs by something
        outside the request (rarely needed)."""
        raw_size = int(getattr(request, _SIZE_FIELD, 0))
        if raw_size < 0:
            raise InvalidArgument(
                "page_size must not be negative",
                field_violations=[FieldViolation(_SIZE_FIELD, "must not be negative")],
            )
        size = min(raw_size or default_size, max_size)
        fingerprint = _query_fingerprint(request, scope)
        token = str(getattr(request, _TOKEN_FIELD, ""))
        return cls(size, cls._decode(token, fingerprint) if token else None, fingerprint)

    @staticmethod
    def _decode(token: str, fingerprint: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            version, query, cursor = data["v"], data["q"], data["c"]
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            raise _bad_token("not a page token of this service") from None
        if version != _VERSION or not isinstance(cursor, list):
            raise _bad_token("not a page token of this service")
        if query != fingerprint:
            raise _bad_token("belongs to another query: send the same filters as the first page")
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in cursor):
            raise _bad_token("not a page token of this service")
        return tuple(cursor)

    def token_after(self, cursor: Cursor) -> str:
        """The token for the page that follows the row whose sort key is `cursor`."""
        data = {"v": _VERSION, "q": self.fingerprint, "c": list(cursor)}
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def cut(self, rows: Sequence[R], key: Callable[[R], Cursor]) -> tuple[Sequence[R], str]:
        """Rows fetched with `limit=size + 1` → (this page, next_page_token or "")."""
        if len(rows) <= self.size:
            return rows, ""
        page = rows[: self.size]
        return page, self.token_after(key(page[-1]))
