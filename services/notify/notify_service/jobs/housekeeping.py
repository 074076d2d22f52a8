"""Housekeeping, on one replica at a time (a leased job): expired dedup keys and old receipt ids
are deleted, and the queue depth gauge is refreshed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from meshkit.db import Database
from notify_service.store import dedup, inbox
from notify_service.store import notifications as store
from notify_service.usecases.metrics import NotifyMetrics

NAME = "notify-housekeeping"


def housekeeping(
    db: Database, metrics: NotifyMetrics, *, inbox_retention_s: float
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with db.acquire() as conn:
            await dedup.purge_expired(conn)
            await inbox.purge(conn, inbox_retention_s)
            metrics.depth.set(await store.depth(conn))

    return run
