"""Housekeeping: forget webhook inbox rows older than the providers' retry windows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from integration_service.store import inbox
from meshkit.db import Database

NAME = "integration-housekeeping"
INBOX_RETENTION_S = 30 * 86400.0


def job(db: Database) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        async with db.acquire() as conn:
            return await inbox.purge(conn, INBOX_RETENTION_S)

    return run
