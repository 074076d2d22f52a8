"""Templates: every version kept; a new version per upsert, numbered per (id, locale)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from notify_service.domain.model import Category, Channel, Template


def from_row(row: asyncpg.Record) -> Template:
    return Template(
        id=row["id"],
        channel=Channel(row["channel"]),
        locale=row["locale"],
        category=Category(row["category"]),
        name=row["name"],
        description=row["description"],
        subject_template=row["subject_template"],
        body_text_template=row["body_text_template"],
        body_html_template=row["body_html_template"],
        required_variables=tuple(row["required_variables"]),
        version=row["version"],
        created_at=row["created_at"],
        source=row["source"],
    )


async def lock(conn: asyncpg.Connection, template_id: str) -> None:
    """Serialise upserts of one template id (transaction-scoped advisory lock)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('notify.template:' || $1, 0))",
        template_id,
    )


async def latest(conn: asyncpg.Connection, template_id: str, locale: str) -> Template | None:
    row = await conn.fetchrow(
        "SELECT * FROM templates WHERE id = $1 AND locale = $2 ORDER BY version DESC LIMIT 1",
        template_id,
        locale,
    )
    return None if row is None else from_row(row)


async def channel_of(conn: asyncpg.Connection, template_id: str) -> Channel | None:
    value = await conn.fetchval(
        "SELECT channel FROM templates WHERE id = $1 ORDER BY created_at DESC LIMIT 1",
        template_id,
    )
    return None if value is None else Channel(value)


async def get(
    conn: asyncpg.Connection, template_id: str, locales: Sequence[str], version: int = 0
) -> Template | None:
    """The first of `locales` that has the template (latest version, or `version`)."""
    row = await conn.fetchrow(
        """
        SELECT t.* FROM templates t
        JOIN unnest($2::text[]) WITH ORDINALITY AS l(locale, rank) ON l.locale = t.locale
        WHERE t.id = $1 AND ($3 = 0 OR t.version = $3)
        ORDER BY l.rank, t.version DESC
        LIMIT 1
        """,
        template_id,
        list(locales),
        version,
    )
    return None if row is None else from_row(row)


async def insert(conn: asyncpg.Connection, t: Template) -> Template:
    row = await conn.fetchrow(
        """
        INSERT INTO templates (id, locale, version, channel, category, name, description,
            subject_template, body_text_template, body_html_template, required_variables,
            source)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        RETURNING *
        """,
        t.id,
        t.locale,
        t.version,
        t.channel.value,
        t.category.value,
        t.name,
        t.description,
        t.subject_template,
        t.body_text_template,
        t.body_html_template,
        list(t.required_variables),
        t.source,
    )
    assert row is not None
    return from_row(row)
