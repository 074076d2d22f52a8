"""The sync engine's tables (migration 0003): the mirror, jobs and their entity rows, cursors
with the write-ahead batch, the id map, dead letters, logs, progress and schedules. Functions
take an asyncpg connection (the caller owns the transaction) and answer plain values."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "PARTIAL"})
ACTIVE = frozenset({"PENDING", "RUNNING"})


def content_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a record (keys sorted, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# -- the mirror -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MirrorRow:
    internal_id: str
    data: Mapping[str, Any]
    content_hash: str
    deleted: bool
    seq: int


async def lock_mirror(conn: asyncpg.Connection, venue_id: str, entity: str) -> None:
    """Serialise writers of one venue and entity (seq order = commit order within it)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 14))", f"mirror:{venue_id}:{entity}"
    )


async def upsert_mirror(
    conn: asyncpg.Connection,
    venue_id: str,
    entity: str,
    records: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    origin: str = "ingest",
) -> int:
    """Store records (internal id, data); only new or changed ones get a new seq. Answers how
    many changed. Call inside a transaction after `lock_mirror`."""
    if not records:
        return 0
    ids = [r[0] for r in records]
    datas = [json.dumps(r[1], sort_keys=True, default=str) for r in records]
    hashes = [content_hash(r[1]) for r in records]
    rows = await conn.fetch(
        """
        INSERT INTO mirror_records (venue_id, entity, internal_id, data, content_hash, origin)
        SELECT $1, $2, i, d::jsonb, h, $6
        FROM unnest($3::text[], $4::text[], $5::text[]) AS t(i, d, h)
        ON CONFLICT (venue_id, entity, internal_id) DO UPDATE
            SET data = EXCLUDED.data, content_hash = EXCLUDED.content_hash, deleted = false,
                seq = nextval('mirror_seq'), origin = EXCLUDED.origin, updated_at = now()
            WHERE mirror_records.content_hash <> EXCLUDED.content_hash OR mirror_records.deleted
        RETURNING internal_id
        """,
        venue_id,
        entity,
        ids,
        datas,
        hashes,
        origin,
    )
    return len(rows)


async def delete_mirror_except(
    conn: asyncpg.Connection, venue_id: str, entity: str, keep: Iterable[str]
) -> int:
    """Tombstone every live record of the venue and entity not in `keep`; how many."""
    result = await conn.execute(
        """
        UPDATE mirror_records SET deleted = true, seq = nextval('mirror_seq'), updated_at = now()
        WHERE venue_id = $1 AND entity = $2 AND NOT deleted AND NOT (internal_id = ANY($3::text[]))
        """,
        venue_id,
        entity,
        list(keep),
    )
    return int(result.split()[-1])


async def delete_mirror(
    conn: asyncpg.Connection, venue_id: str, entity: str, ids: Sequence[str], origin: str
) -> int:
    result = await conn.execute(
        """
        UPDATE mirror_records SET deleted = true, seq = nextval('mirror_seq'), origin = $4,
            updated_at = now()
        WHERE venue_id = $1 AND entity = $2 AND NOT deleted AND internal_id = ANY($3::text[])
        """,
        venue_id,
        entity,
        list(ids),
        origin,
    )
    return int(result.split()[-1])


async def read_mirror(
    conn: asyncpg.Connection,
    venue_id: str,
    entity: str,
    *,
    after_seq: int,
    limit: int,
    only_ids: Sequence[str] | None = None,
) -> list[MirrorRow]:
    rows = await conn.fetch(
        """
        SELECT internal_id, data, content_hash, deleted, seq FROM mirror_records
        WHERE venue_id = $1 AND entity = $2 AND seq > $3
          AND ($5::text[] IS NULL OR internal_id = ANY($5::text[]))
        ORDER BY seq LIMIT $4
        """,
        venue_id,
        entity,
        after_seq,
        limit,
        list(only_ids) if only_ids is not None else None,
    )
    return [
        MirrorRow(r["internal_id"], _json(r["data"]), r["content_hash"], r["deleted"], r["seq"])
        for r in rows
    ]


async def mirror_data(
    conn: asyncpg.Connection, venue_id: str, entity: str, ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The live records' data by internal id (the ids found)."""
    rows = await conn.fetch(
        "SELECT internal_id, data FROM mirror_records "
        "WHERE venue_id = $1 AND entity = $2 AND NOT deleted AND internal_id = ANY($3::text[])",
        venue_id,
        entity,
        list(ids),
    )
    return {r["internal_id"]: dict(_json(r["data"])) for r in rows}


async def count_mirror(
    conn: asyncpg.Connection,
    venue_id: str,
    entity: str,
    *,
    after_seq: int,
    only_ids: Sequence[str] | None = None,
) -> int:
    value = await conn.fetchval(
        """
        SELECT count(*) FROM mirror_records
        WHERE venue_id = $1 AND entity = $2 AND seq > $3
          AND ($4::text[] IS NULL OR internal_id = ANY($4::text[]))
        """,
        venue_id,
        entity,
        after_seq,
        list(only_ids) if only_ids is not None else None,
    )
    return int(value or 0)


# -- jobs -----------------------------------------------------------------------------------------

JOB_COLUMNS = (
    "id, connection_id, venue_id, provider, direction, mode, status, phase, current_entity, "
    "records_total, records_processed, records_succeeded, records_failed, records_skipped, "
    "cancel_requested, error_code, error_message, lease_owner, lease_expires_at, attempts, "
    "progress_seq, requested_by, created_at, started_at, finished_at, updated_at, not_before, "
    "outages"
)


@dataclass(frozen=True, slots=True)
class Job:
    id: uuid.UUID
    connection_id: uuid.UUID
    venue_id: str
    provider: str
    direction: str
    mode: str
    status: str
    phase: str
    current_entity: str
    records_total: int
    records_processed: int
    records_succeeded: int
    records_failed: int
    records_skipped: int
    cancel_requested: bool
    error_code: str
    error_message: str
    lease_owner: str
    lease_expires_at: datetime | None
    attempts: int
    progress_seq: int
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    not_before: datetime | None
    """A PENDING job waiting out a provider outage is not claimed before this."""
    outages: int
    """How often the job went back to PENDING because its provider was unavailable."""
    entities: tuple[str, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _job(row: asyncpg.Record, entities: Sequence[str] = ()) -> Job:
    return Job(**{k: row[k] for k in row.keys()}, entities=tuple(entities))  # noqa: SIM118


async def entities_of(conn: asyncpg.Connection, job_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch(
        "SELECT entity FROM sync_job_entities WHERE job_id = $1 ORDER BY position", job_id
    )
    return [r["entity"] for r in rows]


async def get_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> Job | None:
    row = await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM sync_jobs WHERE id = $1", job_id)
    if row is None:
        return None
    return _job(row, await entities_of(conn, job_id))


async def active_job_for(
    conn: asyncpg.Connection, connection_id: uuid.UUID, entities: Sequence[str]
) -> Job | None:
    job_id = await conn.fetchval(
        """
        SELECT job_id FROM sync_job_entities
        WHERE connection_id = $1 AND entity = ANY($2::text[]) AND active
        LIMIT 1
        """,
        connection_id,
        list(entities),
    )
    return None if job_id is None else await get_job(conn, job_id)


async def insert_job(
    conn: asyncpg.Connection,
    *,
    job_id: uuid.UUID,
    connection_id: uuid.UUID,
    venue_id: str,
    provider: str,
    direction: str,
    mode: str,
    entities: Sequence[str],
    since_seq: Mapping[str, int],
    only_ids: Mapping[str, Sequence[str]] | None,
    requested_by: str,
) -> None:
    """A PENDING job with its entity rows; raises UniqueViolationError when one of the entity
    types already has an active job on the connection (the caller answers that one)."""
    await conn.execute(
        """
        INSERT INTO sync_jobs (id, connection_id, venue_id, provider, direction, mode, status,
                               requested_by)
        VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', $7)
        """,
        job_id,
        connection_id,
        venue_id,
        provider,
        direction,
        mode,
        requested_by,
    )
    for position, entity in enumerate(entities):
        seq = since_seq.get(entity, 0)
        await conn.execute(
            """
            INSERT INTO sync_job_entities (job_id, connection_id, entity, position, since_seq,
                                           checkpoint_seq, only_ids)
            VALUES ($1, $2, $3, $4, $5, $5, $6)
            """,
            job_id,
            connection_id,
            entity,
            position,
            seq,
            list(only_ids[entity]) if only_ids and entity in only_ids else None,
        )


async def claim_job(conn: asyncpg.Connection, worker: str, lease_s: float) -> Job | None:
    """Take the oldest PENDING job, or a RUNNING one whose lease expired (its worker died)."""
    row = await conn.fetchrow(
        f"""
        UPDATE sync_jobs SET status = 'RUNNING', lease_owner = $1,
            lease_expires_at = now() + make_interval(secs => $2), attempts = attempts + 1,
            started_at = coalesce(started_at, now()), updated_at = now()
        WHERE id = (
            SELECT id FROM sync_jobs
            WHERE (status = 'PENDING' AND (not_before IS NULL OR not_before <= now()))
               OR (status = 'RUNNING' AND lease_expires_at < now())
            ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1
        )
        RETURNING {JOB_COLUMNS}
        """,
        worker,
        lease_s,
    )
    if row is None:
        return None
    return _job(row, await entities_of(conn, row["id"]))


async def renew_lease(
    conn: asyncpg.Connection, job_id: uuid.UUID, worker: str, lease_s: float
) -> bool:
    result = await conn.execute(
        """
        UPDATE sync_jobs SET lease_expires_at = now() + make_interval(secs => $3)
        WHERE id = $1 AND lease_owner = $2 AND status = 'RUNNING'
        """,
        job_id,
        worker,
        lease_s,
    )
    return str(result).endswith(" 1")


async def hold_lease(conn: asyncpg.Connection, job_id: uuid.UUID, worker: str) -> bool:
    """Inside a transaction: lock the job row if we still hold it (else the write is aborted)."""
    found = await conn.fetchval(
        "SELECT 1 FROM sync_jobs WHERE id = $1 AND lease_owner = $2 AND status = 'RUNNING' "
        "FOR UPDATE",
        job_id,
        worker,
    )
    return found is not None


async def cancel_requested(conn: asyncpg.Connection, job_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT cancel_requested FROM sync_jobs WHERE id = $1", job_id))


@dataclass(frozen=True, slots=True)
class EntityRow:
    entity: str
    position: int
    done: bool
    since_seq: int
    checkpoint_seq: int
    pull_cursor: str | None
    only_ids: tuple[str, ...] | None
    deletes_done: bool


async def entity_rows(conn: asyncpg.Connection, job_id: uuid.UUID) -> list[EntityRow]:
    rows = await conn.fetch(
        """
        SELECT entity, position, done, since_seq, checkpoint_seq, pull_cursor, only_ids,
               deletes_done
        FROM sync_job_entities WHERE job_id = $1 ORDER BY position
        """,
        job_id,
    )
    return [
        EntityRow(
            r["entity"],
            r["position"],
            r["done"],
            r["since_seq"],
            r["checkpoint_seq"],
            r["pull_cursor"],
            tuple(r["only_ids"]) if r["only_ids"] is not None else None,
            r["deletes_done"],
        )
        for r in rows
    ]


async def set_checkpoint(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    entity: str,
    *,
    checkpoint_seq: int | None = None,
    pull_cursor: str | None = None,
    done: bool | None = None,
    deletes_done: bool | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE sync_job_entities SET
            checkpoint_seq = coalesce($3, checkpoint_seq),
            pull_cursor = coalesce($4, pull_cursor),
            done = coalesce($5, done),
            deletes_done = coalesce($6, deletes_done)
        WHERE job_id = $1 AND entity = $2
        """,
        job_id,
        entity,
        checkpoint_seq,
        pull_cursor,
        done,
        deletes_done,
    )


async def add_counts(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    *,
    succeeded: int = 0,
    failed: int = 0,
    skipped: int = 0,
    phase: str | None = None,
    entity: str | None = None,
    total: int | None = None,
) -> Job:
    row = await conn.fetchrow(
        f"""
        UPDATE sync_jobs SET
            records_succeeded = records_succeeded + $2,
            records_failed = records_failed + $3,
            records_skipped = records_skipped + $4,
            records_processed = records_processed + $2 + $3 + $4,
            phase = coalesce($5, phase),
            current_entity = coalesce($6, current_entity),
            records_total = coalesce($7, records_total),
            updated_at = now()
        WHERE id = $1
        RETURNING {JOB_COLUMNS}
        """,
        job_id,
        succeeded,
        failed,
        skipped,
        phase,
        entity,
        total,
    )
    return _job(row)


async def finish_job(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    status: str,
    *,
    error_code: str = "",
    error_message: str = "",
) -> Job:
    row = await conn.fetchrow(
        f"""
        UPDATE sync_jobs SET status = $2, phase = 'FINISHED', error_code = $3,
            error_message = $4, finished_at = now(), updated_at = now(), lease_owner = '',
            lease_expires_at = NULL
        WHERE id = $1
        RETURNING {JOB_COLUMNS}
        """,
        job_id,
        status,
        error_code,
        error_message,
    )
    await conn.execute("UPDATE sync_job_entities SET active = false WHERE job_id = $1", job_id)
    return _job(row)


@dataclass(frozen=True, slots=True)
class Rerun:
    """A follow-up asked of a job that was active when the request came (`request_rerun`)."""

    entity: str
    push: bool
    pull: bool
    full: bool


async def request_rerun(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    entities: Sequence[str],
    *,
    push: bool,
    pull: bool,
    full: bool,
) -> list[tuple[uuid.UUID, str]]:
    """A sync of `entities` was asked while jobs are active on some of them: mark those (the
    job queues a follow-up when it ends, `take_reruns`), unless the job has not started and
    will read the change anyway (not claimed yet, same direction and mode, no id filter).
    Answers the active (job id, entity) pairs; an entity missing is no longer active (its job
    ended under us: the caller queues a job for it)."""
    rows = await conn.fetch(
        """
        UPDATE sync_job_entities e SET
            rerun_push = e.rerun_push OR ($3 AND NOT covered),
            rerun_pull = e.rerun_pull OR ($4 AND NOT covered),
            rerun_full = e.rerun_full OR ($5 AND NOT covered)
        FROM (
            SELECT x.job_id, x.entity,
                   (j.attempts = 0 AND j.status = 'PENDING' AND x.only_ids IS NULL
                    AND j.mode <> 'RETRY'
                    AND (NOT $3 OR j.direction IN ('PUSH', 'BIDIRECTIONAL'))
                    AND (NOT $4 OR j.direction IN ('PULL', 'BIDIRECTIONAL'))
                    AND (NOT $5 OR j.mode = 'FULL')) AS covered
            FROM sync_job_entities x JOIN sync_jobs j ON j.id = x.job_id
            WHERE x.connection_id = $1 AND x.entity = ANY($2::text[]) AND x.active
        ) c
        WHERE e.job_id = c.job_id AND e.entity = c.entity AND e.active
        RETURNING e.job_id, e.entity
        """,
        connection_id,
        list(entities),
        push,
        pull,
        full,
    )
    return [(r["job_id"], r["entity"]) for r in rows]


async def take_reruns(conn: asyncpg.Connection, job_id: uuid.UUID) -> list[Rerun]:
    """The follow-ups asked of a job, cleared. Call in the transaction that ends the job, after
    `finish_job` (whose update of the entity rows orders it after every request that saw the
    job active: a later request finds the entity inactive and queues its own job)."""
    rows = await conn.fetch(
        """
        SELECT entity, rerun_push, rerun_pull, rerun_full FROM sync_job_entities
        WHERE job_id = $1 AND (rerun_push OR rerun_pull OR rerun_full)
        ORDER BY position FOR UPDATE
        """,
        job_id,
    )
    if rows:
        await conn.execute(
            "UPDATE sync_job_entities SET rerun_push = false, rerun_pull = false, "
            "rerun_full = false WHERE job_id = $1",
            job_id,
        )
    return [Rerun(r["entity"], r["rerun_push"], r["rerun_pull"], r["rerun_full"]) for r in rows]


async def wait_out_outage(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    *,
    delay_s: float,
    error_code: str,
    error_message: str,
) -> Job:
    """Back to PENDING (lease dropped) until now + `delay_s`; checkpoints and the batch in flight
    stay as they are."""
    row = await conn.fetchrow(
        f"""
        UPDATE sync_jobs SET status = 'PENDING', phase = 'QUEUED', lease_owner = '',
            lease_expires_at = NULL, not_before = now() + make_interval(secs => $2),
            outages = outages + 1, error_code = $3, error_message = $4, updated_at = now()
        WHERE id = $1
        RETURNING {JOB_COLUMNS}
        """,
        job_id,
        delay_s,
        error_code,
        error_message,
    )
    return _job(row)


async def request_cancel(conn: asyncpg.Connection, job_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE sync_jobs SET cancel_requested = true, updated_at = now() "
        "WHERE id = $1 AND status IN ('PENDING', 'RUNNING')",
        job_id,
    )


async def list_jobs_of_connection(conn: asyncpg.Connection, connection_id: uuid.UUID) -> list[Job]:
    rows = await conn.fetch(
        f"SELECT {JOB_COLUMNS} FROM sync_jobs WHERE connection_id = $1 ORDER BY created_at",
        connection_id,
    )
    return [_job(r) for r in rows]


# -- progress -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    seq: int
    status: str
    phase: str
    entity: str
    records_total: int
    records_processed: int
    records_succeeded: int
    records_failed: int
    records_skipped: int
    rate_per_minute: int
    eta_seconds: int
    at: datetime


async def add_progress(
    conn: asyncpg.Connection, job: Job, *, rate_per_minute: int = 0, eta_seconds: int = 0
) -> int:
    """A progress row with the job's current state (the job row must be locked or ours)."""
    seq = await conn.fetchval(
        "UPDATE sync_jobs SET progress_seq = progress_seq + 1 WHERE id = $1 RETURNING progress_seq",
        job.id,
    )
    await conn.execute(
        """
        INSERT INTO sync_progress (job_id, seq, status, phase, entity, records_total,
            records_processed, records_succeeded, records_failed, records_skipped,
            rate_per_minute, eta_seconds)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        """,
        job.id,
        seq,
        job.status,
        job.phase,
        job.current_entity,
        job.records_total,
        job.records_processed,
        job.records_succeeded,
        job.records_failed,
        job.records_skipped,
        rate_per_minute,
        eta_seconds,
    )
    return int(seq)


async def progress_after(
    conn: asyncpg.Connection, job_id: uuid.UUID, after_seq: int, limit: int = 100
) -> list[Progress]:
    rows = await conn.fetch(
        """
        SELECT seq, status, phase, entity, records_total, records_processed, records_succeeded,
               records_failed, records_skipped, rate_per_minute, eta_seconds, at
        FROM sync_progress WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
        """,
        job_id,
        after_seq,
        limit,
    )
    return [Progress(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118


# -- cursors and the write-ahead batch ------------------------------------------------------------


async def ensure_cursor(
    conn: asyncpg.Connection, connection_id: uuid.UUID, entity: str, direction: str
) -> None:
    await conn.execute(
        "INSERT INTO sync_cursors (connection_id, entity, direction) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
        connection_id,
        entity,
        direction,
    )


async def cursor(
    conn: asyncpg.Connection, connection_id: uuid.UUID, entity: str, direction: str
) -> tuple[int, str | None, dict[str, Any] | None]:
    """(pushed seq, pull cursor, pending batch)."""
    row = await conn.fetchrow(
        "SELECT pushed_seq, pull_cursor, pending FROM sync_cursors "
        "WHERE connection_id = $1 AND entity = $2 AND direction = $3",
        connection_id,
        entity,
        direction,
    )
    if row is None:
        return 0, None, None
    pending = _json(row["pending"]) if row["pending"] is not None else None
    return row["pushed_seq"], row["pull_cursor"], pending


async def set_pending(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    entity: str,
    pending: Mapping[str, Any] | None,
) -> None:
    await conn.execute(
        "UPDATE sync_cursors SET pending = $3::jsonb, updated_at = now() "
        "WHERE connection_id = $1 AND entity = $2 AND direction = 'PUSH'",
        connection_id,
        entity,
        None if pending is None else json.dumps(pending, default=str),
    )


async def advance_cursor(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    entity: str,
    direction: str,
    *,
    pushed_seq: int | None = None,
    pull_cursor: str | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE sync_cursors SET pushed_seq = greatest(pushed_seq, coalesce($4, pushed_seq)),
            pull_cursor = coalesce($5, pull_cursor), updated_at = now()
        WHERE connection_id = $1 AND entity = $2 AND direction = $3
        """,
        connection_id,
        entity,
        direction,
        pushed_seq,
        pull_cursor,
    )


# -- the id map -----------------------------------------------------------------------------------


async def id_map_of(
    conn: asyncpg.Connection, connection_id: uuid.UUID, entity: str, internal_ids: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """internal id → (external id, content hash) for the ids known."""
    rows = await conn.fetch(
        "SELECT internal_id, external_id, content_hash FROM id_map "
        "WHERE connection_id = $1 AND entity = $2 AND internal_id = ANY($3::text[])",
        connection_id,
        entity,
        list(internal_ids),
    )
    return {r["internal_id"]: (r["external_id"], r["content_hash"]) for r in rows}


async def internal_of(
    conn: asyncpg.Connection, connection_id: uuid.UUID, entity: str, external_ids: Sequence[str]
) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT internal_id, external_id FROM id_map "
        "WHERE connection_id = $1 AND entity = $2 AND external_id = ANY($3::text[])",
        connection_id,
        entity,
        list(external_ids),
    )
    found = {r["external_id"]: r["internal_id"] for r in rows}
    # A composite external id `<parent>/<child>` (Square catalog: item/variation) is also
    # found by its parent alone (a deleted Square item comes back without its variation).
    parents = [e for e in external_ids if e not in found and "/" not in e]
    if parents:
        for r in await conn.fetch(
            "SELECT internal_id, split_part(external_id, '/', 1) AS parent FROM id_map "
            "WHERE connection_id = $1 AND entity = $2 AND external_id LIKE '%/%' "
            "AND split_part(external_id, '/', 1) = ANY($3::text[])",
            connection_id,
            entity,
            parents,
        ):
            found[r["parent"]] = r["internal_id"]
    return found


async def put_id_map(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    entity: str,
    entries: Sequence[tuple[str, str, str]],
) -> None:
    """Upsert (internal id, external id, content hash) entries."""
    if not entries:
        return
    await conn.execute(
        """
        INSERT INTO id_map (connection_id, entity, internal_id, external_id, content_hash)
        SELECT $1, $2, i, e, h FROM unnest($3::text[], $4::text[], $5::text[]) AS t(i, e, h)
        ON CONFLICT (connection_id, entity, internal_id) DO UPDATE
            SET external_id = EXCLUDED.external_id, content_hash = EXCLUDED.content_hash,
                updated_at = now()
        """,
        connection_id,
        entity,
        [e[0] for e in entries],
        [e[1] for e in entries],
        [e[2] for e in entries],
    )


async def drop_id_map(
    conn: asyncpg.Connection, connection_id: uuid.UUID, entity: str, external_ids: Sequence[str]
) -> None:
    if external_ids:
        await conn.execute(
            "DELETE FROM id_map WHERE connection_id = $1 AND entity = $2 "
            "AND (external_id = ANY($3::text[]) "
            "OR (external_id LIKE '%/%' AND split_part(external_id, '/', 1) = ANY($3::text[])))",
            connection_id,
            entity,
            list(external_ids),
        )


async def orphans(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    venue_id: str,
    entity: str,
    limit: int,
) -> list[tuple[str, str]]:
    """(internal id, external id) mapped on the connection whose record is gone from the mirror
    (deleted or never there): what a full sync deletes at the provider."""
    rows = await conn.fetch(
        """
        SELECT m.internal_id, m.external_id FROM id_map m
        LEFT JOIN mirror_records r
          ON r.venue_id = $2 AND r.entity = m.entity AND r.internal_id = m.internal_id
        WHERE m.connection_id = $1 AND m.entity = $3 AND (r.internal_id IS NULL OR r.deleted)
        ORDER BY m.internal_id LIMIT $4
        """,
        connection_id,
        venue_id,
        entity,
        limit,
    )
    return [(r["internal_id"], r["external_id"]) for r in rows]


# -- dead letters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: uuid.UUID
    connection_id: uuid.UUID
    job_id: uuid.UUID
    entity: str
    internal_id: str
    external_id: str
    direction: str
    error_code: str
    error_message: str
    attempts: int
    retryable: bool
    first_failed_at: datetime
    last_failed_at: datetime


async def dead_letter(
    conn: asyncpg.Connection,
    *,
    connection_id: uuid.UUID,
    job_id: uuid.UUID,
    entity: str,
    direction: str,
    failures: Sequence[tuple[str, str, str, str, bool]],
) -> None:
    """Open (or count another attempt on) a dead letter per (internal id, external id, code,
    message, retryable)."""
    for internal_id, external_id, code, message, retryable in failures:
        await conn.execute(
            """
            INSERT INTO sync_dead_letters (id, connection_id, job_id, entity, internal_id,
                external_id, direction, error_code, error_message, retryable)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (connection_id, entity, internal_id, direction) WHERE NOT resolved
            DO UPDATE SET job_id = EXCLUDED.job_id, error_code = EXCLUDED.error_code,
                error_message = EXCLUDED.error_message, retryable = EXCLUDED.retryable,
                attempts = sync_dead_letters.attempts + 1, last_failed_at = now()
            """,
            uuid.uuid4(),
            connection_id,
            job_id,
            entity,
            internal_id,
            external_id,
            direction,
            code,
            message[:2000],
            retryable,
        )


async def resolve_dead_letters(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    entity: str,
    direction: str,
    internal_ids: Sequence[str],
) -> None:
    if internal_ids:
        await conn.execute(
            """
            UPDATE sync_dead_letters SET resolved = true
            WHERE connection_id = $1 AND entity = $2 AND direction = $3 AND NOT resolved
              AND internal_id = ANY($4::text[])
            """,
            connection_id,
            entity,
            direction,
            list(internal_ids),
        )


_DL_COLUMNS = (
    "id, connection_id, job_id, entity, internal_id, external_id, direction, error_code, "
    "error_message, attempts, retryable, first_failed_at, last_failed_at"
)


async def list_dead_letters(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    *,
    job_id: uuid.UUID | None,
    entity: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[DeadLetterRow]:
    rows = await conn.fetch(
        f"""
        SELECT {_DL_COLUMNS} FROM sync_dead_letters
        WHERE connection_id = $1 AND NOT resolved
          AND ($2::uuid IS NULL OR job_id = $2) AND ($3::text IS NULL OR entity = $3)
          AND ($5::timestamptz IS NULL OR (last_failed_at, id) < ($5, $6::uuid))
        ORDER BY last_failed_at DESC, id DESC LIMIT $4
        """,
        connection_id,
        job_id,
        entity,
        limit,
        after[0] if after else None,
        after[1] if after else None,
    )
    return [DeadLetterRow(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118


async def dead_letters_by_id(
    conn: asyncpg.Connection, connection_id: uuid.UUID, ids: Sequence[uuid.UUID] | None
) -> list[DeadLetterRow]:
    """Open dead letters of the connection (the given ids, or all when None)."""
    rows = await conn.fetch(
        f"""
        SELECT {_DL_COLUMNS} FROM sync_dead_letters
        WHERE connection_id = $1 AND NOT resolved AND ($2::uuid[] IS NULL OR id = ANY($2))
        """,
        connection_id,
        list(ids) if ids is not None else None,
    )
    return [DeadLetterRow(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118


# -- logs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRow:
    id: uuid.UUID
    seq: int
    job_id: uuid.UUID
    connection_id: uuid.UUID
    level: str
    message: str
    entity: str
    internal_id: str
    external_id: str
    details: Mapping[str, str]
    logged_at: datetime


async def log(
    conn: asyncpg.Connection,
    job: Job,
    level: str,
    message: str,
    *,
    entity: str = "",
    internal_id: str = "",
    external_id: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO sync_logs (id, job_id, connection_id, level, message, entity, internal_id,
                               external_id, details)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
        """,
        uuid.uuid4(),
        job.id,
        job.connection_id,
        level,
        message,
        entity,
        internal_id,
        external_id,
        json.dumps({k: str(v) for k, v in (details or {}).items()}),
    )


async def list_logs(
    conn: asyncpg.Connection,
    *,
    connection_id: uuid.UUID | None,
    job_id: uuid.UUID | None,
    levels: Sequence[str] | None,
    logged_from: datetime | None,
    logged_to: datetime | None,
    before_seq: int | None,
    limit: int,
) -> list[LogRow]:
    rows = await conn.fetch(
        """
        SELECT id, seq, job_id, connection_id, level, message, entity, internal_id, external_id,
               details, logged_at
        FROM sync_logs
        WHERE ($1::uuid IS NULL OR connection_id = $1) AND ($2::uuid IS NULL OR job_id = $2)
          AND ($3::text[] IS NULL OR level = ANY($3))
          AND ($4::timestamptz IS NULL OR logged_at >= $4)
          AND ($5::timestamptz IS NULL OR logged_at < $5)
          AND ($6::bigint IS NULL OR seq < $6)
        ORDER BY seq DESC LIMIT $7
        """,
        connection_id,
        job_id,
        list(levels) if levels is not None else None,
        logged_from,
        logged_to,
        before_seq,
        limit,
    )
    return [
        LogRow(
            r["id"],
            r["seq"],
            r["job_id"],
            r["connection_id"],
            r["level"],
            r["message"],
            r["entity"],
            r["internal_id"],
            r["external_id"],
            _json(r["details"]),
            r["logged_at"],
        )
        for r in rows
    ]


# -- schedules ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    connection_id: uuid.UUID
    entities: tuple[str, ...]
    direction: str
    interval_s: int
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: uuid.UUID | None
    updated_at: datetime


_SCHEDULE_COLUMNS = (
    "connection_id, entities, direction, interval_s, enabled, next_run_at, last_run_at, "
    "last_job_id, updated_at"
)


def _schedule(r: asyncpg.Record) -> Schedule:
    return Schedule(
        r["connection_id"],
        tuple(r["entities"]),
        r["direction"],
        r["interval_s"],
        r["enabled"],
        r["next_run_at"],
        r["last_run_at"],
        r["last_job_id"],
        r["updated_at"],
    )


async def set_schedule(
    conn: asyncpg.Connection,
    connection_id: uuid.UUID,
    *,
    entities: Sequence[str],
    direction: str,
    interval_s: int,
    enabled: bool,
) -> Schedule:
    row = await conn.fetchrow(
        f"""
        INSERT INTO sync_schedules (connection_id, entities, direction, interval_s, enabled,
                                    next_run_at)
        VALUES ($1, $2, $3, $4::integer, $5,
                CASE WHEN $5 THEN now() + make_interval(secs => $4::integer) END)
        ON CONFLICT (connection_id) DO UPDATE SET entities = EXCLUDED.entities,
            direction = EXCLUDED.direction, interval_s = EXCLUDED.interval_s,
            enabled = EXCLUDED.enabled, next_run_at = EXCLUDED.next_run_at, updated_at = now()
        RETURNING {_SCHEDULE_COLUMNS}
        """,
        connection_id,
        list(entities),
        direction,
        interval_s,
        enabled,
    )
    return _schedule(row)


async def get_schedule(conn: asyncpg.Connection, connection_id: uuid.UUID) -> Schedule | None:
    row = await conn.fetchrow(
        f"SELECT {_SCHEDULE_COLUMNS} FROM sync_schedules WHERE connection_id = $1",
        connection_id,
    )
    return None if row is None else _schedule(row)


async def due_schedules(conn: asyncpg.Connection, limit: int) -> list[Schedule]:
    rows = await conn.fetch(
        f"""
        SELECT {_SCHEDULE_COLUMNS} FROM sync_schedules
        WHERE enabled AND next_run_at <= now() ORDER BY next_run_at LIMIT $1
        FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return [_schedule(r) for r in rows]


async def schedule_ran(
    conn: asyncpg.Connection, connection_id: uuid.UUID, job_id: uuid.UUID | None
) -> None:
    await conn.execute(
        """
        UPDATE sync_schedules SET last_run_at = now(), last_job_id = coalesce($2, last_job_id),
            next_run_at = now() + make_interval(secs => interval_s)
        WHERE connection_id = $1
        """,
        connection_id,
        job_id,
    )
