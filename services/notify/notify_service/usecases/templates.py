"""Templates: UpsertTemplate (a new version each time), GetTemplate, RenderTemplate (a preview),
the lookup SendNotification renders from, and seeding the shipped templates at start.

SendNotification's lookup (latest version in the best locale) is kept for
NOTIFY_TEMPLATE_CACHE_S: an upsert in this process forgets it at once; other replicas use the
new version within that time."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

from meshkit.db import Database
from notify_service.domain import templates as rendering
from notify_service.domain.errors import (
    InvalidInput,
    TemplateChannelMismatch,
    TemplateNotFound,
    TemplateVersionMismatch,
    UnknownTemplate,
    Violation,
)
from notify_service.domain.model import Channel, Content, Template
from notify_service.store import templates as store

logger = logging.getLogger(__name__)


class Templates:
    """Template use cases (build once)."""

    def __init__(self, db: Database, *, default_locale: str, cache_s: float = 0.0) -> None:
        self._db = db
        self.default_locale = rendering.normalise_locale(default_locale)
        self._cache_s = cache_s
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[float, Template]] = {}

    def _locale(self, locale: str) -> str:
        return rendering.normalise_locale(locale) if locale else self.default_locale

    async def upsert(self, template: Template, *, expected_version: int) -> tuple[Template, bool]:
        """Store a new version of `template` (its id and locale); returns (stored, created)."""
        template = dataclasses.replace(
            template,
            locale=self._locale(template.locale),
            required_variables=tuple(template.required_variables),
            source="api",
        )
        rendering.check_template(template)
        async with self._db.transaction() as conn:
            await store.lock(conn, template.id)
            channel = await store.channel_of(conn, template.id)
            if channel is not None and channel is not template.channel:
                raise TemplateChannelMismatch(channel.value)
            current = await store.latest(conn, template.id, template.locale)
            version = current.version if current else 0
            if expected_version and expected_version != version:
                raise TemplateVersionMismatch(expected_version, version)
            stored = await store.insert(conn, dataclasses.replace(template, version=version + 1))
        self._forget(template.id)
        logger.info(
            "template stored",
            extra={"template_id": stored.id, "locale": stored.locale, "version": stored.version},
        )
        return stored, current is None

    async def get(self, template_id: str, locale: str, version: int) -> Template:
        async with self._db.acquire() as conn:
            found = await store.get(
                conn,
                template_id,
                rendering.locale_candidates(self._locale(locale), self.default_locale),
                version,
            )
        if found is None:
            raise TemplateNotFound()
        return found

    async def preview(
        self, template_id: str, locale: str, version: int, variables: Mapping[str, str]
    ) -> tuple[Template, Content]:
        """RenderTemplate: the template rendered with `variables` (built-ins get sample values
        when not given); missing variables are INVALID_ARGUMENT, listed one by one."""
        template = await self.get(template_id, locale, version)
        sample = {
            "recipient_name": "Ada Lovelace",
            "unsubscribe_url": "https://example.com/unsubscribe/preview",
            "notification_id": "00000000-0000-0000-0000-000000000000",
        }
        return template, rendering.render_template(template, {**sample, **variables})

    async def for_sending(self, template_id: str, locale: str, channel: Channel) -> Template:
        """The template SendNotification renders: latest version in the best locale. Unknown
        template or one for another channel: bad input (nothing is queued)."""
        locales = tuple(rendering.locale_candidates(locale, self.default_locale))
        key = (template_id, locales)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            found: Template | None = cached[1]
        else:
            async with self._db.acquire() as conn:
                found = await store.get(conn, template_id, locales)
            if found is not None and self._cache_s > 0:
                if len(self._cache) > 1024:
                    self._cache.clear()
                self._cache[key] = (now + self._cache_s, found)
        if found is None:
            raise UnknownTemplate()
        if found.channel is not channel:
            raise InvalidInput(
                [
                    Violation(
                        "channel",
                        f"template {template_id!r} is written for CHANNEL_{found.channel.value}",
                    )
                ]
            )
        return found

    def _forget(self, template_id: str) -> None:
        for key in [k for k in self._cache if k[0] == template_id]:
            self._cache.pop(key, None)

    async def seed(self, shipped: Sequence[Template]) -> int:
        """Store every shipped template (id, locale) that has no version yet; returns how many.
        A stored version, shipped or edited, is never overwritten."""
        added = 0
        for template in shipped:
            rendering.check_template(template)
            async with self._db.transaction() as conn:
                await store.lock(conn, template.id)
                if await store.latest(conn, template.id, template.locale) is not None:
                    continue
                await store.insert(conn, dataclasses.replace(template, version=1, source="shipped"))
                added += 1
        if added:
            logger.info("shipped templates stored", extra={"count": added})
        return added
