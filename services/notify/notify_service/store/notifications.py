"""Notifications: the records and their queue, in one table (a record and its queue entry can
never disagree).

Workers claim rows with `FOR UPDATE SKIP LOCKED` and take a lease (token + expiry) in the same
statement, then commit: the row lock lasts only for the claim, never across a provider call.
Every later write of the worker is conditional on its lease token (a worker that lost its lease
cannot overwrite the new owner's writes) and on the status machine (domain/states.py), so no
write moves a notification backwards. A crashed worker's rows are claimable again once the lease
expires; their status (SENDING) tells the next worker an attempt's outcome is unknown.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from notify_service.domain.model import (
    Attachment,
    Category,
    Channel,
    Content,
    Notification,
    NotificationFilter,
    Priority,
    Status,
    TemplateRef,
)
from notify_service.domain.states import PENDING, sources

_PENDING_IN = "(" + ", ".join(f"'{s.value}'" for s in sorted(PENDING)) + ")"
_MOVES = [(t.value, s.value) for t in Status for s in sources(t)]


def _from(target: Status) -> list[str]:
    return [s.value for s in sources(target)]


def from_row(row: asyncpg.Record, attachments: Sequence[Attachment] = ()) -> Notification:
    template = (
        TemplateRef(row["template_id"], row["template_version"], row["template_locale"] or "")
        if row["template_id"]
        else None
    )
    metadata = row["metadata"]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return Notification(
        id=row["id"],
        status=Status(row["status"]),
        channel=Channel(row["channel"]),
        category=Category(row["category"]),
        priority=Priority(row["priority"]),
        user_id=row["user_id"],
        destination=row["destination"],
        destination_masked=row["destination_masked"],
        recipient_name=row["recipient_name"],
        time_zone=row["time_zone"],
        content=Content(row["subject"], row["body_text"], row["body_html"]),
        template=template,
        dedup_key=row["dedup_key"],
        message_id=row["message_id"],
        provider=row["provider"],
        provider_message_id=row["provider_message_id"],
        provider_index=row["provider_index"],
        attempts=row["attempts"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        metadata=dict(metadata or {}),
        scheduled_at=row["scheduled_at"],
        available_at=row["available_at"],
        deferred_reason=row["deferred_reason"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
        failed_at=row["failed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attachments=tuple(attachments),
        traceparent=row["traceparent"] or "",
        tracestate=row["tracestate"] or "",
    )


def from_rows(rows: Sequence[asyncpg.Record]) -> list[Notification]:
    return [from_row(r) for r in rows]


_COLUMNS = """id, status, channel, category, priority, user_id, destination, destination_masked,
    recipient_name, time_zone, subject, body_text, body_html, template_id, template_version,
    template_locale, dedup_key, message_id, error_code, error_message, metadata,
    has_attachments, scheduled_at, available_at, deferred_reason, traceparent, tracestate"""
_VALUES = """$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
    $19, $20, $21::jsonb, $22, $23, $24, $25, $26, $27"""
# One statement: take the dedup key (or find it taken within its window) and insert the
# notification only when the key is ours. A concurrent insert of the same key waits on the key's
# unique index until the first commits, then sees it taken.
_INSERT_DEDUP_SQL = f"""
WITH claim AS (
    INSERT INTO dedup_keys (dedup_key, notification_id, expires_at)
    VALUES ($17, $1, now() + make_interval(secs => $28))
    ON CONFLICT (dedup_key) DO UPDATE
        SET notification_id = EXCLUDED.notification_id, expires_at = EXCLUDED.expires_at
        WHERE dedup_keys.expires_at < now()
    RETURNING notification_id
)
INSERT INTO notifications ({_COLUMNS})
SELECT {_VALUES} FROM claim
RETURNING *
"""
_INSERT_SQL = f"INSERT INTO notifications ({_COLUMNS}) VALUES ({_VALUES}) RETURNING *"


def _values(n: Notification) -> list[Any]:
    return [
        n.id,
        n.status.value,
        n.channel.value,
        n.category.value,
        int(n.priority),
        n.user_id,
        n.destination,
        n.destination_masked,
        n.recipient_name,
        n.time_zone,
        n.content.subject,
        n.content.body_text,
        n.content.body_html,
        n.template.template_id if n.template else None,
        n.template.version if n.template else None,
        n.template.locale if n.template else None,
        n.dedup_key,
        n.message_id,
        n.error_code,
        n.error_message,
        json.dumps(dict(n.metadata)),
        bool(n.attachments),
        n.scheduled_at,
        n.available_at,
        n.deferred_reason,
        n.traceparent or None,
        n.tracestate or None,
    ]


async def insert(
    conn: asyncpg.Connection, n: Notification, *, dedup_window_s: float = 0.0
) -> Notification | None:
    """Insert a new notification (and its attachments: call inside a transaction then). With a
    dedup key, only when the key is free (or expired): None when another notification holds it
    (`dedup_holder` says which)."""
    if n.dedup_key:
        row = await conn.fetchrow(_INSERT_DEDUP_SQL, *_values(n), dedup_window_s)
    else:
        row = await conn.fetchrow(_INSERT_SQL, *_values(n))
    if row is None:
        return None
    if n.attachments:
        await conn.executemany(
            "INSERT INTO notification_attachments "
            "(notification_id, position, filename, content_type, content) "
            "VALUES ($1, $2, $3, $4, $5)",
            [(n.id, i, a.filename, a.content_type, a.content) for i, a in enumerate(n.attachments)],
        )
    return from_row(row, n.attachments)


async def dedup_holder(conn: asyncpg.Connection, dedup_key: str) -> Notification | None:
    """The notification holding `dedup_key`."""
    row = await conn.fetchrow(
        "SELECT n.* FROM dedup_keys d JOIN notifications n ON n.id = d.notification_id "
        "WHERE d.dedup_key = $1",
        dedup_key,
    )
    return None if row is None else from_row(row)


async def get(conn: asyncpg.Connection, notification_id: uuid.UUID) -> Notification | None:
    row = await conn.fetchrow("SELECT * FROM notifications WHERE id = $1", notification_id)
    return None if row is None else from_row(row)


async def attachments_of(
    conn: asyncpg.Connection, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[Attachment, ...]]:
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT notification_id, filename, content_type, content FROM notification_attachments "
        "WHERE notification_id = ANY($1::uuid[]) ORDER BY notification_id, position",
        list(ids),
    )
    found: dict[uuid.UUID, list[Attachment]] = {}
    for r in rows:
        found.setdefault(r["notification_id"], []).append(
            Attachment(r["filename"], r["content_type"], bytes(r["content"]))
        )
    return {k: tuple(v) for k, v in found.items()}


async def find(
    conn: asyncpg.Connection,
    f: NotificationFilter,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Notification]:
    """Newest first, keyset-paged on (created_at, id)."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.user_id:
        clauses.append(f"user_id = {arg(f.user_id)}")
    if f.channel is not None:
        clauses.append(f"channel = {arg(f.channel.value)}")
    if f.statuses:
        clauses.append(f"status = ANY({arg([s.value for s in f.statuses])}::text[])")
    if f.category is not None:
        clauses.append(f"category = {arg(f.category.value)}")
    if f.dedup_key:
        clauses.append(f"dedup_key = {arg(f.dedup_key)}")
    if f.created_from is not None:
        clauses.append(f"created_at >= {arg(f.created_from)}")
    if f.created_to is not None:
        clauses.append(f"created_at < {arg(f.created_to)}")
    if after is not None:
        clauses.append(f"(created_at, id) < ({arg(after[0])}, {arg(after[1])})")
    where = " AND ".join(clauses) or "TRUE"
    rows = await conn.fetch(
        f"SELECT * FROM notifications WHERE {where} "
        f"ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}",
        *args,
    )
    return from_rows(rows)


# -- the queue --------------------------------------------------------------------------------

_CLAIM_SQL = f"""
WITH picked AS (
    SELECT id FROM notifications
    WHERE status IN {_PENDING_IN}
      AND available_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY priority, available_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n
SET lease_token = $2, lease_until = now() + make_interval(secs => $3)
FROM picked
WHERE n.id = picked.id
RETURNING n.*
"""


async def claim(
    conn: asyncpg.Connection, limit: int, lease_token: uuid.UUID, lease_s: float
) -> list[Notification]:
    """Lease up to `limit` due notifications, in queue order (priority, then due time)."""
    rows = await conn.fetch(_CLAIM_SQL, limit, lease_token, lease_s)
    found = from_rows(rows)
    with_files = [n.id for n, r in zip(found, rows, strict=True) if r["has_attachments"]]
    if with_files:
        files = await attachments_of(conn, with_files)
        found = [n if n.id not in files else _with_attachments(n, files[n.id]) for n in found]
    return sorted(found, key=lambda n: (int(n.priority), n.available_at))


def _with_attachments(n: Notification, files: tuple[Attachment, ...]) -> Notification:
    return dataclasses.replace(n, attachments=files)


@dataclass(frozen=True, slots=True)
class Sending:
    """An attempt about to be made: which provider (its place in the channel's order)."""

    notification_id: uuid.UUID
    provider: str
    provider_index: int
    new_attempt: bool
    """True for a round's first provider (the attempt count goes up); False on failover."""


async def mark_sending(
    conn: asyncpg.Connection, lease_token: uuid.UUID, items: Sequence[Sending]
) -> set[uuid.UUID]:
    """Record each attempt BEFORE it is made (SENDING, provider, attempt count); returns the
    notifications whose lease we still hold (only those may be sent)."""
    if not items:
        return set()
    rows = await conn.fetch(
        """
        UPDATE notifications n
        SET status = 'SENDING', provider = s.provider, provider_index = s.idx,
            attempts = n.attempts + CASE WHEN s.new_attempt THEN 1 ELSE 0 END,
            updated_at = now()
        FROM unnest($2::uuid[], $3::text[], $4::int[], $5::bool[])
            AS s(id, provider, idx, new_attempt)
        WHERE n.id = s.id AND n.lease_token = $1 AND n.status = ANY($6::text[])
        RETURNING n.id
        """,
        lease_token,
        [i.notification_id for i in items],
        [i.provider for i in items],
        [i.provider_index for i in items],
        [i.new_attempt for i in items],
        _from(Status.SENDING),
    )
    return {r["id"] for r in rows}


@dataclass(frozen=True, slots=True)
class Sent:
    notification_id: uuid.UUID
    provider: str
    provider_message_id: str


async def mark_sent(
    conn: asyncpg.Connection, lease_token: uuid.UUID, sent: Sequence[Sent]
) -> list[Notification]:
    """Record accepted sends in one statement; returns those whose lease we still held."""
    if not sent:
        return []
    rows = await conn.fetch(
        """
        UPDATE notifications n
        SET status = 'SENT', provider = s.provider, provider_message_id = s.pmid,
            sent_at = now(), lease_token = NULL, lease_until = NULL, deferred_reason = '',
            error_code = '', error_message = '', updated_at = now()
        FROM unnest($2::uuid[], $3::text[], $4::text[]) AS s(id, provider, pmid)
        WHERE n.id = s.id AND n.lease_token = $1 AND n.status = ANY($5::text[])
        RETURNING n.*
        """,
        lease_token,
        [s.notification_id for s in sent],
        [s.provider for s in sent],
        [s.provider_message_id for s in sent],
        _from(Status.SENT),
    )
    return from_rows(rows)


@dataclass(frozen=True, slots=True)
class NotSent:
    """A round that did not send: retry at `delay`, or a final state."""

    notification_id: uuid.UUID
    status: Status
    delay: float
    error_code: str
    error_message: str
    deferred_reason: str = ""


async def mark_not_sent(
    conn: asyncpg.Connection, lease_token: uuid.UUID, outcomes: Sequence[NotSent]
) -> list[Notification]:
    """Record rounds that did not send, in one statement; each moves only along the status
    machine and only while our lease holds. Returns the rows written."""
    if not outcomes:
        return []
    rows = await conn.fetch(
        """
        UPDATE notifications n
        SET status = o.status,
            available_at = CASE WHEN o.status = 'QUEUED'
                                THEN now() + make_interval(secs => o.delay)
                                ELSE n.available_at END,
            provider_index = CASE WHEN o.status = 'QUEUED' THEN 0 ELSE n.provider_index END,
            failed_at = CASE WHEN o.status IN ('FAILED', 'DEAD_LETTERED', 'BOUNCED')
                             THEN now() ELSE n.failed_at END,
            deferred_reason = o.deferred,
            lease_token = NULL, lease_until = NULL,
            error_code = o.code, error_message = o.message, updated_at = now()
        FROM unnest($2::uuid[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[])
                AS o(id, status, delay, code, message, deferred),
             unnest($8::text[], $9::text[]) AS m(target, source)
        WHERE n.id = o.id AND n.lease_token = $1
          AND m.target = o.status AND m.source = n.status
        RETURNING n.*
        """,
        lease_token,
        [o.notification_id for o in outcomes],
        [o.status.value for o in outcomes],
        [o.delay for o in outcomes],
        [o.error_code for o in outcomes],
        [o.error_message[:500] for o in outcomes],
        [o.deferred_reason for o in outcomes],
        [t for t, _ in _MOVES],
        [s for _, s in _MOVES],
    )
    return from_rows(rows)


async def release(
    conn: asyncpg.Connection, lease_token: uuid.UUID, ids: Sequence[uuid.UUID]
) -> None:
    """Give notifications back to the queue unchanged (shutdown mid-round): a SENDING one stays
    SENDING, so whoever takes it knows an attempt may have reached the provider."""
    await conn.execute(
        "UPDATE notifications SET lease_token = NULL, lease_until = NULL "
        "WHERE lease_token = $1 AND id = ANY($2::uuid[])",
        lease_token,
        list(ids),
    )


# -- receipts and operators -------------------------------------------------------------------


async def by_provider_message(
    conn: asyncpg.Connection, provider_message_id: str
) -> Notification | None:
    row = await conn.fetchrow(
        "SELECT * FROM notifications WHERE provider_message_id = $1 LIMIT 1", provider_message_id
    )
    return None if row is None else from_row(row)


async def apply_status(
    conn: asyncpg.Connection,
    notification_id: uuid.UUID,
    target: Status,
    *,
    error_code: str = "",
    error_message: str = "",
    provider_message_id: str = "",
) -> Notification | None:
    """Move a notification to `target` if the status machine allows it from where it is
    (receipts: SENT → DELIVERED, ...); None when it does not (stale or out-of-order receipt)."""
    row = await conn.fetchrow(
        """
        UPDATE notifications
        SET status = $2,
            delivered_at = CASE WHEN $2 = 'DELIVERED' THEN now() ELSE delivered_at END,
            sent_at = CASE WHEN $2 IN ('SENT', 'DELIVERED') THEN coalesce(sent_at, now())
                           ELSE sent_at END,
            failed_at = CASE WHEN $2 IN ('FAILED', 'BOUNCED') THEN now() ELSE failed_at END,
            error_code = CASE WHEN $3 <> '' THEN $3 ELSE error_code END,
            error_message = CASE WHEN $3 <> '' THEN $4 ELSE error_message END,
            provider_message_id = CASE WHEN provider_message_id = '' THEN $5
                                       ELSE provider_message_id END,
            lease_token = CASE WHEN status = 'QUEUED' THEN NULL ELSE lease_token END,
            updated_at = now()
        WHERE id = $1 AND status = ANY($6::text[])
        RETURNING *
        """,
        notification_id,
        target.value,
        error_code,
        error_message[:500],
        provider_message_id,
        _from(target),
    )
    return None if row is None else from_row(row)


async def operator_list(
    conn: asyncpg.Connection, statuses: Sequence[Status], limit: int
) -> list[Notification]:
    rows = await conn.fetch(
        "SELECT * FROM notifications WHERE status = ANY($1::text[]) "
        "ORDER BY updated_at DESC LIMIT $2",
        [s.value for s in statuses],
        limit,
    )
    return from_rows(rows)


async def requeue(
    conn: asyncpg.Connection, ids: Sequence[uuid.UUID] | None, statuses: Sequence[Status]
) -> list[uuid.UUID]:
    """Operator retry: back to QUEUED with attempts reset (the Message-ID stays the same, so a
    message that did arrive is recognisable as the same one). `ids` None: all of `statuses`."""
    rows = await conn.fetch(
        """
        UPDATE notifications
        SET status = 'QUEUED', attempts = 0, provider_index = 0, available_at = now(),
            lease_token = NULL, lease_until = NULL, deferred_reason = 'operator_retry',
            failed_at = NULL, updated_at = now()
        WHERE status = ANY($1::text[]) AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))
        RETURNING id
        """,
        [s.value for s in statuses],
        None if ids is None else list(ids),
    )
    return [r["id"] for r in rows]


async def depth(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval(f"SELECT count(*) FROM notifications WHERE status IN {_PENDING_IN}")
    return int(value or 0)
