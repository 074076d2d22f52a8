"""What operators do with notifications that did not make it (notifyctl): list them, retry
them. A retried notification keeps its id and Message-ID; consent is checked again when it is
sent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from meshkit.db import Database
from notify_service.domain.model import Notification, Status
from notify_service.domain.states import RETRYABLE_BY_OPERATOR
from notify_service.store import notifications as store


async def stuck(db: Database, limit: int, *, include_failed: bool = False) -> list[Notification]:
    """Dead-lettered notifications (and, with `include_failed`, failed ones), newest first."""
    statuses = [Status.DEAD_LETTERED] + ([Status.FAILED] if include_failed else [])
    async with db.acquire() as conn:
        return await store.operator_list(conn, statuses, limit)


async def retry(
    db: Database, ids: Sequence[uuid.UUID] | None, *, include_failed: bool = False
) -> list[uuid.UUID]:
    """Back to the queue (attempts reset): the given ids, or (None) every dead letter."""
    statuses = sorted(
        RETRYABLE_BY_OPERATOR if include_failed else {Status.DEAD_LETTERED}, key=lambda s: s.value
    )
    async with db.transaction() as conn:
        return await store.requeue(conn, ids, statuses)
