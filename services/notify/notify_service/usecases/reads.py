"""GetNotification and ListNotifications."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from meshkit.db import Database
from notify_service.domain.errors import NotificationNotFound
from notify_service.domain.model import Notification, NotificationFilter
from notify_service.store import notifications as store

Authorize = Callable[[Notification], bool]


class Reads:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, notification_id: uuid.UUID, *, may_see: Authorize) -> Notification:
        async with self._db.acquire() as conn:
            found = await store.get(conn, notification_id)
        if found is None or not may_see(found):
            raise NotificationNotFound()  # one the caller may not see does not exist for them
        return found

    async def find(
        self,
        f: NotificationFilter,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[Notification]:
        async with self._db.acquire() as conn:
            return await store.find(conn, f, limit=limit, after=after)
