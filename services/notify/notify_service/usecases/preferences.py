"""SetPreferences, GetPreferences, and the one-click unsubscribe link (RFC 8058)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from meshkit.db import Database
from notify_service.domain import preferences as rules
from notify_service.domain.errors import InvalidInput, NotificationNotFound
from notify_service.domain.model import Preferences
from notify_service.store import notifications
from notify_service.store import preferences as store
from notify_service.usecases import consent
from notify_service.usecases.links import Links

logger = logging.getLogger(__name__)

Authorize = Callable[[str], None]


class PreferenceCases:
    """Preferences and unsubscribes (build once)."""

    def __init__(self, *, db: Database, links: Links) -> None:
        self._db = db
        self._links = links

    async def get(self, user_id: str, *, authorize: Authorize) -> Preferences:
        authorize(user_id)
        async with self._db.acquire() as conn:
            found = await store.get(conn, user_id)
        return found or rules.defaults(user_id)

    async def set(self, preferences: Preferences, *, authorize: Authorize) -> Preferences:
        authorize(preferences.user_id)
        problems = rules.check(preferences)
        if problems:
            raise InvalidInput(problems)
        async with self._db.transaction() as conn:
            return await store.put(conn, preferences)

    async def unsubscribe(self, token: str) -> uuid.UUID:
        """The one-click link: what the token's notification was, its recipient opts out of
        (usecases/consent.py). Idempotent: a second click changes nothing more."""
        notification_id = self._links.verify(token)
        if notification_id is None:
            raise NotificationNotFound()
        async with self._db.transaction() as conn:
            n = await notifications.get(conn, notification_id)
            if n is None:
                raise NotificationNotFound()
            await consent.unsubscribe(conn, n, "one_click")
        logger.info(
            "unsubscribed",
            extra={
                "notification_id": str(n.id),
                "category": n.category.value,
                "channel": n.channel.value,
                "guest": not n.user_id,
            },
        )
        return n.id

    async def token_is_valid(self, token: str) -> bool:
        return self._links.verify(token) is not None
