"""The sync engine: workers that claim queued sync jobs and run them batch by batch.

Claiming: `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)` takes the oldest PENDING job,
or a RUNNING one whose lease expired (its worker died: kill -9, a lost node). The holder renews
the lease (a heartbeat every third of it); every write of a batch first re-checks, in its own
transaction, that the lease is still ours, so a worker that lost its job cannot move its
checkpoint. A job's entity types run in order; each keeps its own checkpoint.

PUSH, per batch (the writer's `batch_size`):

1. read the mirror's records after the checkpoint (seq order);
2. map each (`domain.mappings.map_record`, the connection's stored mappings or the provider's
   default); a mapping error dead-letters the record (it is not sent);
3. look each up in the id map: known with the same content hash → skipped (unless it is a
   retry); known → update (external id given); unknown → create;
4. write-ahead: the exact records to send are stored as the cursor's `pending` batch before
   the provider is called, so a crash resends the SAME batch (same idempotency keys: the
   provider answers the first answer again) rather than a batch composed differently;
5. `Writer.write` (and `Writer.delete` for tombstones), then ONE transaction: id map, dead
   letters (opened / resolved), checkpoint, counts, a progress row, `pending` cleared.

Full syncs then delete at the provider what the id map holds but the mirror no longer does.
CancelSync is honoured between batches. A provider outage (unavailable or throttled after
the guard's retries, its breaker open) puts the job back in the queue until a backoff has
passed (`outage_retries` times, doubling from `outage_backoff_s`), keeping its checkpoints and
`pending`: the resumed job sends that batch first. Any other error that stops a batch
(credentials refused), or an outage past the bound, fails the job and keeps `pending`: the
next job on the entity sends that batch first.

Nothing stranded: a sync asked (StartSync, RecordTransaction's push, a webhook's pull) while a
job is active on the entity type marks that job (`store.sync.request_rerun`); when the job
ends well it queues, in its final transaction, one incremental follow-up for those entity
types, so a record that reached the mirror after the job read its last batch is synced
without waiting for a schedule. Progress rows (sequence, phase, counts, rate
per minute, ETA) are what WatchSyncJob streams.

PULL pages a `Reader` from the stored cursor (incremental) or the beginning (full) into the
mirror, mapping the provider's fields back (`apply_inbound`), and keeps the cursor per page.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from integration_service.domain.errors import IntegrationError, TryLater
from integration_service.domain.model import SYSTEM, Connection, EntityType, Provider
from integration_service.store import connections as connections_store
from integration_service.store import sync as s
from integration_service.sync import registry
from integration_service.sync.ports import Fetcher, InRecord, OutRecord, SyncContext, WriteResult
from integration_service.usecases.tokens import TokenKeeper
from meshkit.db import Database
from meshkit.errors import DeadlineExceeded, MeshError, ResourceExhausted, Unavailable
from meshkit.resilience import ProviderGuard

_log = logging.getLogger(__name__)

MappingsLoader = Callable[[asyncpg.Connection, uuid.UUID], Awaitable[Sequence[Any]]]


async def no_stored_mappings(_conn: asyncpg.Connection, _connection_id: uuid.UUID) -> list[Any]:
    """The loader used until field mappings are stored: every sync uses the defaults."""
    return []


def map_outbound(
    stored: Sequence[Any], provider: Provider, entity: EntityType, record: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, tuple[str, str, bool] | None]:
    """(mapped fields, None) or (None, (error code, message, retryable))."""
    try:
        from integration_service.domain import mappings
    except ImportError:  # pragma: no cover - before the mappings module exists
        return dict(record), None
    result = mappings.map_record(stored, provider, entity, record)
    if isinstance(result, mappings.MappingError):
        return None, (result.code, result.message, result.retryable)
    return result, None


def map_inbound(
    stored: Sequence[Any],
    provider: Provider,
    entity: EntityType,
    fields: Mapping[str, Any],
    cur: str,
) -> tuple[dict[str, Any] | None, tuple[str, str, bool] | None]:
    try:
        from integration_service.domain import mappings
    except ImportError:  # pragma: no cover
        return dict(fields), None
    result = mappings.apply_inbound(
        mappings.effective(stored, provider, entity), fields, currency=cur
    )
    if isinstance(result, mappings.MappingError):
        return None, (result.code, result.message, result.retryable)
    return result, None


@dataclass(frozen=True)
class EngineSettings:
    worker_id: str
    lease_s: float = 30.0
    """How long a claimed job stays ours without a heartbeat."""
    deletes_batch: int = 100
    max_attempts: int = 20
    """Claims of one job (each after a worker died or a step failed) before it is FAILED."""
    outage_retries: int = 6
    """Times a job goes back to the queue when its provider is unavailable (after the guard's
    own retries, or its breaker open) before it is FAILED with the provider's error."""
    outage_backoff_s: float = 5.0
    """The first wait after an outage; doubled each time (a longer Retry-After is honoured)."""
    outage_backoff_max_s: float = 300.0


class LeaseLost(Exception):
    """Another worker owns the job now (our lease expired)."""


class Cancelled(Exception):
    pass


class _Rate:
    """Records per minute over the last batches, and the ETA from it."""

    def __init__(self) -> None:
        self._marks: deque[tuple[float, int]] = deque(maxlen=20)

    def mark(self, processed: int) -> None:
        self._marks.append((time.monotonic(), processed))

    def figures(self, processed: int, total: int) -> tuple[int, int]:
        if len(self._marks) < 2:
            return 0, 0
        (t0, p0), (t1, p1) = self._marks[0], self._marks[-1]
        if t1 <= t0 or p1 <= p0:
            return 0, 0
        per_minute = int((p1 - p0) * 60 / (t1 - t0))
        left = max(0, total - processed)
        eta = int(left * 60 / per_minute) if per_minute > 0 else 0
        return per_minute, eta


class SyncEngine:
    def __init__(
        self,
        *,
        db: Database,
        tokens: TokenKeeper,
        guards: Mapping[str, ProviderGuard],
        http: httpx.AsyncClient,
        api_bases: Mapping[Provider, str],
        settings: EngineSettings,
        load_mappings: MappingsLoader = no_stored_mappings,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._guards = guards
        self._http = http
        self._api_bases = api_bases
        self._settings = settings
        self._load_mappings = load_mappings
        self.wake = asyncio.Event()
        registry.load()

    # -- the worker step ------------------------------------------------------------------------
    async def step(self) -> bool:
        """Claim one job and run it to its end (or until the lease is lost); True when a job
        was run (more may be waiting)."""
        async with self._db.acquire() as conn:
            job = await s.claim_job(conn, self._settings.worker_id, self._settings.lease_s)
        if job is None:
            return False
        _log.info(
            "sync job claimed",
            extra={"job_id": str(job.id), "attempt": job.attempts, "status": job.status},
        )
        if job.attempts > self._settings.max_attempts:
            # Claimed over and over (each worker died or failed on it): stop trying.
            await self._finish(
                job, "FAILED", "too_many_attempts", f"abandoned after {job.attempts - 1} attempts"
            )
            return True
        work = asyncio.create_task(self._run(job), name=f"sync:{job.id}")
        beat = asyncio.create_task(self._heartbeat(job.id, work), name=f"sync-beat:{job.id}")
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:  # we are stopping: the job's lease runs out, and
            work.cancel()  # another worker resumes it from its checkpoint
            raise
        finally:
            beat.cancel()
        if work.cancelled() or isinstance(work.exception(), LeaseLost):
            _log.warning("sync job lease lost", extra={"job_id": str(job.id)})
        elif work.exception() is not None:
            raise work.exception()  # type: ignore[misc]
        return True

    async def _heartbeat(self, job_id: uuid.UUID, work: asyncio.Task[None]) -> None:
        every = self._settings.lease_s / 3
        while not work.done():
            await asyncio.sleep(every)
            try:
                async with self._db.acquire() as conn:
                    ours = await s.renew_lease(
                        conn, job_id, self._settings.worker_id, self._settings.lease_s
                    )
            except Exception:
                _log.warning("sync lease renewal failed", extra={"job_id": str(job_id)})
                continue
            if not ours:
                work.cancel()
                return

    # -- one job --------------------------------------------------------------------------------
    async def _run(self, job: s.Job) -> None:
        async with self._db.acquire() as conn:
            connection = await connections_store.get(conn, job.connection_id)
            stored = await self._load_mappings(conn, job.connection_id)
            rows = await s.entity_rows(conn, job.id)
        if connection is None:
            await self._finish(job, "FAILED", "connection_not_found", "the connection is gone")
            return
        rate = _Rate()
        try:
            await self._count_total(job, rows)
            for row in rows:
                if row.done:
                    continue
                entity = EntityType(row.entity)
                if job.direction in ("PULL", "BIDIRECTIONAL"):
                    await self._pull(job, connection, entity, row, stored)
                if job.direction in ("PUSH", "BIDIRECTIONAL"):
                    await self._push(job, connection, entity, row, stored, rate)
                async with self._db.transaction() as conn:
                    await self._hold(conn, job)
                    await s.set_checkpoint(conn, job.id, row.entity, done=True)
        except Cancelled:
            await self._finish(job, "CANCELLED", "cancelled", "cancelled by CancelSync")
            return
        except LeaseLost:
            raise
        except (IntegrationError, MeshError, httpx.HTTPError) as exc:
            code = getattr(exc, "reason", "") or type(exc).__name__
            if transient(exc) and await self._wait_out(job, str(code).lower(), exc):
                return
            _log.warning("sync job failed", extra={"job_id": str(job.id), "error_code": str(code)})
            await self._finish(job, "FAILED", str(code).lower(), str(exc)[:1000])
            return
        async with self._db.acquire() as conn:
            current = await s.get_job(conn, job.id)
        failed = current is not None and current.records_failed > 0
        await self._finish(job, "PARTIAL" if failed else "SUCCEEDED", "", "")

    async def _wait_out(self, job: s.Job, code: str, exc: Exception) -> bool:
        """The provider is unavailable: back to the queue until a backoff has passed (its
        checkpoints and the batch in flight kept: the resumed job sends that batch first);
        False once the job has waited `outage_retries` times (the caller FAILS it)."""
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            outages = int(
                await conn.fetchval("SELECT outages FROM sync_jobs WHERE id = $1", job.id) or 0
            )
            if outages >= self._settings.outage_retries:
                return False
            delay = min(
                self._settings.outage_backoff_max_s,
                max(
                    self._settings.outage_backoff_s * 2**outages,
                    float(getattr(exc, "retry_after", None) or 0.0),
                ),
            )
            waiting = await s.wait_out_outage(
                conn, job.id, delay_s=delay, error_code=code, error_message=str(exc)[:1000]
            )
            await s.add_progress(conn, waiting)
            await s.log(
                conn,
                waiting,
                "WARNING",
                "provider unavailable: the job waits and resumes from its checkpoint",
                entity=waiting.current_entity,
                details={
                    "error_code": code,
                    "retry_in_s": round(delay, 3),
                    "outage": outages + 1,
                    "of": self._settings.outage_retries,
                },
            )
        _log.warning(
            "sync job waits out a provider outage",
            extra={"job_id": str(job.id), "error_code": code, "retry_in_s": delay},
        )
        return True

    async def _hold(self, conn: asyncpg.Connection, job: s.Job) -> None:
        if not await s.hold_lease(conn, job.id, self._settings.worker_id):
            raise LeaseLost()

    async def _count_total(self, job: s.Job, rows: Sequence[s.EntityRow]) -> None:
        if job.direction == "PULL":
            return
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            remaining = 0
            for row in rows:
                if not row.done:
                    remaining += await s.count_mirror(
                        conn,
                        job.venue_id,
                        row.entity,
                        after_seq=row.checkpoint_seq,
                        only_ids=row.only_ids,
                    )
            current = await s.add_counts(
                conn,
                job.id,
                phase="PREPARING",
                total=job.records_processed + remaining,
            )
            await s.add_progress(conn, current)
            if job.attempts > 1 and job.outages > 0:
                await s.log(
                    conn,
                    current,
                    "INFO",
                    "job resumed from its checkpoint after a provider outage",
                    details={"attempt": job.attempts, "outages": job.outages},
                )
            elif job.attempts > 1:
                await s.log(
                    conn,
                    current,
                    "WARNING",
                    "job resumed from its checkpoint by another worker",
                    details={"attempt": job.attempts},
                )
            else:
                await s.log(conn, current, "INFO", "job started", details={"total": remaining})

    async def _finish(self, job: s.Job, status: str, code: str, message: str) -> None:
        async with self._db.transaction() as conn:
            if not await s.hold_lease(conn, job.id, self._settings.worker_id):
                raise LeaseLost()
            if status in ("SUCCEEDED", "PARTIAL"):
                for row in await s.entity_rows(conn, job.id):
                    if job.mode != "RETRY" and job.direction in ("PUSH", "BIDIRECTIONAL"):
                        await s.advance_cursor(
                            conn,
                            job.connection_id,
                            row.entity,
                            "PUSH",
                            pushed_seq=row.checkpoint_seq,
                        )
                await conn.execute(
                    "UPDATE connections SET last_synced_at = now() WHERE id = $1",
                    job.connection_id,
                )
            done = await s.finish_job(conn, job.id, status, error_code=code, error_message=message)
            reruns = await s.take_reruns(conn, job.id)
            await s.add_progress(conn, done)
            level = {"SUCCEEDED": "INFO", "PARTIAL": "WARNING", "CANCELLED": "INFO"}.get(
                status, "ERROR"
            )
            await s.log(
                conn,
                done,
                level,
                f"job {status.lower()}",
                details={
                    "succeeded": done.records_succeeded,
                    "failed": done.records_failed,
                    "skipped": done.records_skipped,
                    **({"error_code": code} if code else {}),
                },
            )
            follow_up = await self._follow_up(conn, done, reruns)
        if follow_up is not None:
            self.wake.set()
        _log.info("sync job finished", extra={"job_id": str(job.id), "status": status})

    async def _follow_up(
        self, conn: asyncpg.Connection, job: s.Job, reruns: Sequence[s.Rerun]
    ) -> uuid.UUID | None:
        """Syncs asked while the job was active: one incremental job (FULL when one asked for
        it) over their entity types, queued as the job ends (in its transaction), so what
        reached the mirror after the job read its last batch does not wait for a schedule.
        Not after a job that failed or was cancelled (its records wait for the next sync)."""
        if not reruns:
            return None
        if job.status not in ("SUCCEEDED", "PARTIAL"):
            await s.log(
                conn,
                job,
                "WARNING",
                "syncs asked while this job ran are not followed up: it did not succeed",
                details={"entities": ",".join(r.entity for r in reruns)},
            )
            return None
        push = any(r.push for r in reruns)
        pull = any(r.pull for r in reruns)
        direction = "BIDIRECTIONAL" if push and pull else ("PUSH" if push else "PULL")
        mode = "FULL" if any(r.full for r in reruns) else "INCREMENTAL"
        entities = [r.entity for r in reruns]
        since: dict[str, int] = {}
        if mode == "INCREMENTAL":
            for entity in entities:
                pushed, _, _ = await s.cursor(conn, job.connection_id, entity, "PUSH")
                since[entity] = pushed
        follow_up = uuid.uuid4()
        await s.insert_job(
            conn,
            job_id=follow_up,
            connection_id=job.connection_id,
            venue_id=job.venue_id,
            provider=job.provider,
            direction=direction,
            mode=mode,
            entities=entities,
            since_seq=since,
            only_ids=None,
            requested_by=SYSTEM.subject,
        )
        queued = await s.get_job(conn, follow_up)
        assert queued is not None
        await s.add_progress(conn, queued)
        await s.log(
            conn,
            queued,
            "INFO",
            "job queued",
            details={"mode": mode, "direction": direction, "follows": str(job.id)},
        )
        await s.log(conn, job, "INFO", "follow-up queued", details={"job_id": str(follow_up)})
        return follow_up

    def _context(self, connection: Connection, entity: EntityType, job: s.Job) -> SyncContext:
        async def caller(fn: Callable[..., Awaitable[Any]]) -> Any:
            _, result = await self._tokens.call(connection, SYSTEM, f"sync:{job.id}", fn)
            return result

        return SyncContext(
            connection=connection,
            entity=entity,
            job_id=job.id,
            guard=self._guards[connection.provider.value],
            caller=caller,
            api_base=connection.api_base or self._api_bases.get(connection.provider, ""),
            http=self._http,
        )

    # -- PUSH -----------------------------------------------------------------------------------
    async def _push(
        self,
        job: s.Job,
        connection: Connection,
        entity: EntityType,
        row: s.EntityRow,
        stored: Sequence[Any],
        rate: _Rate,
    ) -> None:
        writer = registry.WRITERS.get((connection.provider, entity))
        if writer is None:
            raise _Unsupported(connection.provider, entity)
        ctx = self._context(connection, entity, job)
        checkpoint = row.checkpoint_seq
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            await s.ensure_cursor(conn, job.connection_id, entity.value, "PUSH")
            _, _, pending = await s.cursor(conn, job.connection_id, entity.value, "PUSH")
            current = await s.add_counts(conn, job.id, phase="WRITING", entity=entity.value)
            await s.add_progress(conn, current)
        if pending is not None:
            # A batch sent before a crash (or a failed job): send exactly it again first.
            records = [OutRecord(**r) for r in pending["records"]]
            resent: Sequence[WriteResult] = await writer.write(ctx, records) if records else []
            same_job = pending.get("job_id") == str(job.id)
            await self._record_batch(
                job,
                connection,
                entity,
                writer_records=records,
                results=resent,
                mapping_failures=[],
                skipped=0,
                deleted=[],
                checkpoint=int(pending["upto_seq"]) if same_job else None,
                count=same_job,
                rate=rate,
            )
            if same_job:
                checkpoint = max(checkpoint, int(pending["upto_seq"]))
        while True:
            async with self._db.acquire() as conn:
                if await s.cancel_requested(conn, job.id):
                    raise Cancelled()
                batch = await s.read_mirror(
                    conn,
                    job.venue_id,
                    entity.value,
                    after_seq=checkpoint,
                    limit=writer.batch_size,
                    only_ids=row.only_ids,
                )
                known = await s.id_map_of(
                    conn, job.connection_id, entity.value, [r.internal_id for r in batch]
                )
            if not batch:
                break
            upto = batch[-1].seq
            out: list[OutRecord] = []
            failures: list[tuple[str, str, str, str, bool]] = []
            tombstones: list[tuple[str, str]] = []
            skipped = 0
            for rec in batch:
                mapped_to = known.get(rec.internal_id)
                if rec.deleted:
                    if mapped_to is not None:
                        tombstones.append((rec.internal_id, mapped_to[0]))
                    else:
                        skipped += 1
                    continue
                fields, error = map_outbound(
                    stored, connection.provider, entity, {**rec.data, "id": rec.internal_id}
                )
                if error is not None or fields is None:
                    code, message, retryable = error or ("mapping_failed", "", False)
                    failures.append(
                        (
                            rec.internal_id,
                            mapped_to[0] if mapped_to else "",
                            code,
                            message,
                            retryable,
                        )
                    )
                    continue
                version = s.content_hash(fields)
                if mapped_to is not None and mapped_to[1] == version and job.mode != "RETRY":
                    skipped += 1
                    continue
                out.append(
                    OutRecord(
                        internal_id=rec.internal_id,
                        fields=fields,
                        external_id=mapped_to[0] if mapped_to else None,
                        version=version,
                    )
                )
            results: Sequence[WriteResult] = []
            deleted: Sequence[WriteResult] = []
            if out:
                async with self._db.transaction() as conn:
                    await self._hold(conn, job)
                    await s.set_pending(
                        conn,
                        job.connection_id,
                        entity.value,
                        {
                            "job_id": str(job.id),
                            "upto_seq": upto,
                            "records": [
                                {
                                    "internal_id": r.internal_id,
                                    "fields": r.fields,
                                    "external_id": r.external_id,
                                    "version": r.version,
                                }
                                for r in out
                            ],
                        },
                    )
                results = await writer.write(ctx, out)
            if tombstones:
                deleted = await writer.delete(ctx, [t[1] for t in tombstones])
            await self._record_batch(
                job,
                connection,
                entity,
                writer_records=out,
                results=results,
                mapping_failures=failures,
                skipped=skipped,
                deleted=deleted,
                checkpoint=upto,
                count=True,
                rate=rate,
                tombstones=tombstones,
            )
            checkpoint = upto
        if job.mode == "FULL" and not row.deletes_done:
            await self._delete_orphans(job, connection, entity, writer, ctx)

    async def _record_batch(
        self,
        job: s.Job,
        connection: Connection,
        entity: EntityType,
        *,
        writer_records: Sequence[OutRecord],
        results: Sequence[WriteResult],
        mapping_failures: Sequence[tuple[str, str, str, str, bool]],
        skipped: int,
        deleted: Sequence[WriteResult],
        checkpoint: int | None,
        count: bool,
        rate: _Rate,
        tombstones: Sequence[tuple[str, str]] = (),
    ) -> None:
        versions = {r.internal_id: r.version for r in writer_records}
        by_id = {r.internal_id: r for r in writer_records}
        ok = [r for r in results if r.error_code is None and r.external_id]
        bad = [r for r in results if r.error_code is not None or not r.external_id]
        answered = {r.internal_id for r in results}
        missing = [r for r in writer_records if r.internal_id not in answered]
        failures = (
            list(mapping_failures)
            + [
                (
                    r.internal_id,
                    r.external_id or (by_id[r.internal_id].external_id or "")
                    if r.internal_id in by_id
                    else "",
                    r.error_code or "no_external_id",
                    r.error_message or "",
                    r.retryable,
                )
                for r in bad
            ]
            + [
                (
                    r.internal_id,
                    r.external_id or "",
                    "no_answer",
                    "the writer answered nothing",
                    True,
                )
                for r in missing
            ]
        )
        gone = [r.external_id or r.internal_id for r in deleted if r.error_code is None]
        delete_failed = [r for r in deleted if r.error_code is not None]
        tomb_by_ext = {ext: internal for internal, ext in tombstones}
        failures += [
            (
                tomb_by_ext.get(r.external_id or r.internal_id, r.internal_id),
                r.external_id or "",
                r.error_code or "delete_failed",
                r.error_message or "",
                r.retryable,
            )
            for r in delete_failed
        ]
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            await s.put_id_map(
                conn,
                job.connection_id,
                entity.value,
                [(r.internal_id, r.external_id or "", versions.get(r.internal_id, "")) for r in ok],
            )
            await s.drop_id_map(conn, job.connection_id, entity.value, gone)
            await s.resolve_dead_letters(
                conn,
                job.connection_id,
                entity.value,
                "PUSH",
                [r.internal_id for r in ok] + [tomb_by_ext.get(g, g) for g in gone],
            )
            await s.dead_letter(
                conn,
                connection_id=job.connection_id,
                job_id=job.id,
                entity=entity.value,
                direction="PUSH",
                failures=failures,
            )
            if checkpoint is not None:
                await s.set_checkpoint(conn, job.id, entity.value, checkpoint_seq=checkpoint)
            await s.set_pending(conn, job.connection_id, entity.value, None)
            current = await s.add_counts(
                conn,
                job.id,
                succeeded=(len(ok) + len(gone)) if count else 0,
                failed=len(failures) if count else 0,
                skipped=skipped if count else 0,
            )
            rate.mark(current.records_processed)
            per_minute, eta = rate.figures(current.records_processed, current.records_total)
            await s.add_progress(conn, current, rate_per_minute=per_minute, eta_seconds=eta)
            for internal_id, external_id, code, message, _ in failures[:50]:
                await s.log(
                    conn,
                    current,
                    "ERROR",
                    f"record failed: {code}",
                    entity=entity.value,
                    internal_id=internal_id,
                    external_id=external_id,
                    details={"error_code": code, "error": message[:500]},
                )
            await s.log(
                conn,
                current,
                "INFO",
                "batch written",
                entity=entity.value,
                details={
                    "written": len(ok),
                    "deleted": len(gone),
                    "failed": len(failures),
                    "skipped": skipped,
                    "checkpoint": checkpoint if checkpoint is not None else "",
                },
            )

    async def _delete_orphans(
        self,
        job: s.Job,
        connection: Connection,
        entity: EntityType,
        writer: Any,
        ctx: SyncContext,
    ) -> None:
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            current = await s.add_counts(conn, job.id, phase="DELETING")
            await s.add_progress(conn, current)
        size = max(1, min(self._settings.deletes_batch, writer.batch_size))
        failed_ids: set[str] = set()
        while True:
            async with self._db.acquire() as conn:
                if await s.cancel_requested(conn, job.id):
                    raise Cancelled()
                found = await s.orphans(
                    conn, job.connection_id, job.venue_id, entity.value, size + len(failed_ids)
                )
            found = [f for f in found if f[1] not in failed_ids][:size]
            if not found:
                break
            results = await writer.delete(ctx, [f[1] for f in found])
            failed_ids |= {r.external_id or r.internal_id for r in results if r.error_code}
            await self._record_batch(
                job,
                connection,
                entity,
                writer_records=[],
                results=[],
                mapping_failures=[],
                skipped=0,
                deleted=results,
                checkpoint=None,
                count=True,
                rate=_Rate(),
                tombstones=found,
            )
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            await s.set_checkpoint(conn, job.id, entity.value, deletes_done=True)

    # -- PULL -----------------------------------------------------------------------------------
    async def _pull(
        self,
        job: s.Job,
        connection: Connection,
        entity: EntityType,
        row: s.EntityRow,
        stored: Sequence[Any],
    ) -> None:
        reader = registry.READERS.get((connection.provider, entity))
        if reader is None:
            raise _Unsupported(connection.provider, entity)
        ctx = self._context(connection, entity, job)
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            await s.ensure_cursor(conn, job.connection_id, entity.value, "PULL")
            _, stored_cursor, _ = await s.cursor(conn, job.connection_id, entity.value, "PULL")
            current = await s.add_counts(conn, job.id, phase="READING", entity=entity.value)
            await s.add_progress(conn, current)
        cursor = row.pull_cursor
        if cursor is None and job.mode == "INCREMENTAL":
            cursor = stored_cursor
        currency = str(connection.settings.get("currency", "USD"))
        if row.only_ids and isinstance(reader, Fetcher):
            # A webhook named the changed records: read just those (the cursor is kept).
            page = await reader.fetch(ctx, list(row.only_ids))
            await self._record_page(job, connection, entity, page, stored, currency, None)
            return
        while True:
            async with self._db.acquire() as conn:
                if await s.cancel_requested(conn, job.id):
                    raise Cancelled()
            page, next_cursor = await reader.pull(ctx, cursor)
            await self._record_page(job, connection, entity, page, stored, currency, next_cursor)
            if not page or next_cursor is None or next_cursor == cursor:
                cursor = next_cursor or cursor
                break
            cursor = next_cursor
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            await s.advance_cursor(
                conn, job.connection_id, entity.value, "PULL", pull_cursor=cursor
            )

    async def _record_page(
        self,
        job: s.Job,
        connection: Connection,
        entity: EntityType,
        page: Sequence[InRecord],
        stored: Sequence[Any],
        currency: str,
        next_cursor: str | None,
    ) -> None:
        origin = str(connection.id)
        async with self._db.transaction() as conn:
            await self._hold(conn, job)
            known = await s.internal_of(
                conn, job.connection_id, entity.value, [r.external_id for r in page]
            )
            upserts: list[tuple[str, Mapping[str, Any]]] = []
            removed: list[str] = []
            removed_external: list[str] = []
            failures: list[tuple[str, str, str, str, bool]] = []
            links: list[tuple[str, str, str]] = []
            mapped: list[tuple[InRecord, dict[str, Any]]] = []
            for rec in page:
                if rec.deleted:
                    if rec.external_id in known:
                        removed.append(known[rec.external_id])
                        removed_external.append(rec.external_id)
                    continue
                fields, error = map_inbound(
                    stored, connection.provider, entity, rec.fields, currency
                )
                if error is not None or fields is None:
                    code, message, retryable = error or ("mapping_failed", "", False)
                    internal_id = known.get(rec.external_id) or rec.external_id
                    failures.append((internal_id, rec.external_id, code, message, retryable))
                    continue
                mapped.append((rec, fields))
            # Our id: the id map's; else the id the provider record carries in a mapped field
            # (e.g. the SKU we wrote); else a new one named after the provider's id.
            internal_ids = {
                rec.external_id: known.get(rec.external_id)
                or (str(fields["id"]) if isinstance(fields.get("id"), str) and fields["id"] else "")
                or f"{connection.provider.value}:{rec.external_id}"
                for rec, fields in mapped
            }
            current_data = await s.mirror_data(
                conn, job.venue_id, entity.value, list(internal_ids.values())
            )
            for rec, fields in mapped:
                internal_id = internal_ids[rec.external_id]
                # Merge into what we hold: an unchanged provider record changes nothing (no
                # new seq, so no echo to the other connections).
                data = deep_merge(current_data.get(internal_id, {}), fields)
                data["id"] = internal_id
                upserts.append((internal_id, data))
                outbound, _ = map_outbound(stored, connection.provider, entity, data)
                # The id map's hash is what we would write back: the next push skips it.
                links.append(
                    (internal_id, rec.external_id, s.content_hash(outbound) if outbound else "")
                )
            await s.lock_mirror(conn, job.venue_id, entity.value)
            changed = await s.upsert_mirror(
                conn, job.venue_id, entity.value, upserts, origin=origin
            )
            gone = await s.delete_mirror(conn, job.venue_id, entity.value, removed, origin)
            await s.put_id_map(conn, job.connection_id, entity.value, links)
            await s.drop_id_map(conn, job.connection_id, entity.value, removed_external)
            await s.dead_letter(
                conn,
                connection_id=job.connection_id,
                job_id=job.id,
                entity=entity.value,
                direction="PULL",
                failures=failures,
            )
            if next_cursor is not None:
                await s.set_checkpoint(conn, job.id, entity.value, pull_cursor=next_cursor)
            current = await s.add_counts(
                conn,
                job.id,
                succeeded=changed + gone,
                failed=len(failures),
                skipped=len(page) - changed - gone - len(failures),
                total=None,
            )
            await conn.execute(
                "UPDATE sync_jobs SET records_total = records_processed WHERE id = $1", job.id
            )
            await s.add_progress(conn, current)
            if page:
                await s.log(
                    conn,
                    current,
                    "INFO",
                    "page read",
                    entity=entity.value,
                    details={"changed": changed, "deleted": gone, "failed": len(failures)},
                )


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update`'s values (nested dicts merged, other values replaced)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def transient(exc: BaseException) -> bool:
    """A provider outage worth waiting out: unavailable or throttled after the guard's retries,
    its breaker open, out of time, the connection itself failing, or our token refresh or
    credential store briefly busy."""
    outage = (Unavailable, ResourceExhausted, DeadlineExceeded, TryLater, httpx.TransportError)
    return isinstance(exc, outage)


class _Unsupported(IntegrationError):
    reason = "ENTITY_NOT_SYNCED"

    def __init__(self, provider: Provider, entity: EntityType) -> None:
        super().__init__(f"no {entity.value} sync for {provider.value} in this version")
