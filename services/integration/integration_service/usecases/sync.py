"""Use cases of the sync RPCs: ingest into the mirror, start / read / watch / cancel jobs, logs,
dead letters and their retry, schedules (and the leased job that queues due ones).

What reaches the mirror goes on to the venue's tools without another call: after an ingest (or
a recorded transaction) commits, `push_changes` queues an incremental PUSH of each changed
entity type on every CONNECTED connection of the venue whose provider writes that type, or asks
the job already active on it for a follow-up (`start`). An ingest that changed nothing in the
mirror queues nothing.

Access: a venue admin reaches only their venues' connections and jobs (others answer NOT_FOUND,
as connections do); an admin reaches all."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from integration_service.domain import catalog
from integration_service.domain.errors import ConnectionNotFound, VenueNotManaged
from integration_service.domain.model import (
    SYSTEM,
    Actor,
    Connection,
    ConnectionFilter,
    ConnectionStatus,
    Direction,
    EntityType,
)
from integration_service.domain.sync_errors import (
    ConnectionNotSyncable,
    EntityNotSynced,
    SyncJobNotFound,
)
from integration_service.store import connections as connections_store
from integration_service.store import sync as s
from integration_service.store.sync import TERMINAL as TERMINAL
from integration_service.store.sync import DeadLetterRow as DeadLetterRow
from integration_service.store.sync import Job as Job
from integration_service.store.sync import LogRow as LogRow
from integration_service.store.sync import Progress as Progress
from integration_service.store.sync import Schedule as Schedule
from meshkit.db import Database

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TicketType:
    ticket_type_id: str
    name: str
    description: str
    price_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    event_id: str
    name: str
    description: str
    starts_at: datetime | None
    venue_name: str
    ticket_types: tuple[TicketType, ...]


@dataclass(frozen=True, slots=True)
class IngestResult:
    changed: int
    unchanged: int
    deleted: int = 0
    job_ids: tuple[uuid.UUID, ...] = ()
    """The pushes queued (or active jobs answering) for the change; none when nothing changed."""


def product_record(venue_id: str, event: CatalogEvent, t: TicketType) -> dict[str, Any]:
    """A ticket type as the mirror keeps it (`mappings.INTERNAL[PRODUCT]`)."""
    return {
        "id": t.ticket_type_id,
        "name": t.name,
        "description": t.description,
        "price": {"amount_minor": t.price_minor, "currency": t.currency},
        "venue_id": venue_id,
        "event": {
            "id": event.event_id,
            "name": event.name,
            "description": event.description,
            "starts_at": event.starts_at.isoformat().replace("+00:00", "Z")
            if event.starts_at
            else None,
            "venue_name": event.venue_name,
        },
    }


class SyncCases:
    def __init__(self, *, db: Database, wake: asyncio.Event | None = None) -> None:
        self._db = db
        self._wake = wake
        self.watch_poll_s = 0.2

    # -- access ---------------------------------------------------------------------------------
    async def _connection(
        self, conn: asyncpg.Connection, actor: Actor, connection_id: uuid.UUID
    ) -> Connection:
        found = await connections_store.get(conn, connection_id)
        if found is None or not actor.manages(found.venue_id):
            raise ConnectionNotFound()
        return found

    async def job(self, actor: Actor, job_id: uuid.UUID) -> s.Job:
        async with self._db.acquire() as conn:
            found = await s.get_job(conn, job_id)
        if found is None or not actor.manages(found.venue_id):
            raise SyncJobNotFound()
        return found

    # -- ingest ---------------------------------------------------------------------------------
    async def ingest_catalog(
        self, actor: Actor, venue_id: str, events: Sequence[CatalogEvent], *, complete: bool
    ) -> IngestResult:
        if not actor.manages(venue_id):
            raise VenueNotManaged(venue_id)
        records: dict[str, dict[str, Any]] = {}
        for event in events:
            for t in event.ticket_types:
                records[t.ticket_type_id] = product_record(venue_id, event, t)
        async with self._db.transaction() as conn:
            await s.lock_mirror(conn, venue_id, EntityType.PRODUCT.value)
            changed = await s.upsert_mirror(
                conn, venue_id, EntityType.PRODUCT.value, list(records.items())
            )
            deleted = 0
            if complete:
                deleted = await s.delete_mirror_except(
                    conn, venue_id, EntityType.PRODUCT.value, list(records)
                )
        jobs = await self.push_changes(venue_id, [EntityType.PRODUCT]) if changed or deleted else ()
        return IngestResult(changed, len(records) - changed, deleted, jobs)

    async def ingest_inventory(
        self,
        actor: Actor,
        venue_id: str,
        levels: Sequence[tuple[str, int]],
        counted_at: datetime,
    ) -> IngestResult:
        if not actor.manages(venue_id):
            raise VenueNotManaged(venue_id)
        stamp = counted_at.isoformat().replace("+00:00", "Z")
        wanted = dict(levels)
        async with self._db.transaction() as conn:
            await s.lock_mirror(conn, venue_id, EntityType.INVENTORY.value)
            rows = await conn.fetch(
                "SELECT internal_id, data->>'updated_at' AS at FROM mirror_records "
                "WHERE venue_id = $1 AND entity = 'INVENTORY' AND internal_id = ANY($2::text[])",
                venue_id,
                list(wanted),
            )
            newer = {
                r["internal_id"]
                for r in rows
                if r["at"] and datetime.fromisoformat(r["at"].replace("Z", "+00:00")) > counted_at
            }
            records = [
                (tid, {"product_id": tid, "remaining": remaining, "updated_at": stamp})
                for tid, remaining in wanted.items()
                if tid not in newer
            ]
            # The same count again is unchanged even with a newer time stamp.
            current = {
                r["internal_id"]: r["remaining"]
                for r in await conn.fetch(
                    "SELECT internal_id, (data->>'remaining')::bigint AS remaining "
                    "FROM mirror_records WHERE venue_id = $1 AND entity = 'INVENTORY' "
                    "AND NOT deleted AND internal_id = ANY($2::text[])",
                    venue_id,
                    list(wanted),
                )
            }
            records = [r for r in records if current.get(r[0]) != r[1]["remaining"]]
            changed = await s.upsert_mirror(conn, venue_id, EntityType.INVENTORY.value, records)
        jobs = await self.push_changes(venue_id, [EntityType.INVENTORY]) if changed else ()
        return IngestResult(changed, len(wanted) - changed, job_ids=jobs)

    async def push_changes(
        self, venue_id: str, entities: Sequence[EntityType]
    ) -> tuple[uuid.UUID, ...]:
        """Call after the mirror change of `entities` committed: an incremental PUSH per entity
        type (one job each: a running customer sync must not stand for the receipts) on every
        CONNECTED connection of the venue whose provider pushes it, or the active job on it
        asked for a follow-up. One connection's trouble is logged and does not stop the
        others' push (the change stays in the mirror for the next sync)."""
        async with self._db.acquire() as conn:
            connections = await connections_store.find(
                conn,
                ConnectionFilter(venue_ids=(venue_id,), statuses=(ConnectionStatus.CONNECTED,)),
                limit=1000,
                after=None,
            )
        jobs: list[uuid.UUID] = []
        for connection in connections:
            pushed = {
                c.entity_type
                for c in catalog.spec(connection.provider).capabilities
                if Direction.PUSH in c.directions
            }
            for entity in (e for e in entities if e in pushed):
                try:
                    job = await self.start(
                        SYSTEM_ADMIN,
                        connection.id,
                        entities=[entity],
                        direction=Direction.PUSH,
                        mode="INCREMENTAL",
                    )
                except Exception:
                    _log.warning(
                        "push of a mirror change not queued",
                        extra={"connection_id": str(connection.id), "entity": entity.value},
                        exc_info=True,
                    )
                    continue
                jobs.append(job.id)
        return tuple(jobs)

    # -- jobs -----------------------------------------------------------------------------------
    async def start(
        self,
        actor: Actor,
        connection_id: uuid.UUID,
        *,
        entities: Sequence[EntityType],
        direction: Direction,
        mode: str,
        only_ids: Mapping[str, Sequence[str]] | None = None,
    ) -> s.Job:
        """Queue a job (or answer the active one on any of the entity types)."""
        async with self._db.acquire() as conn:
            connection = await self._connection(conn, actor, connection_id)
        if connection.status is not ConnectionStatus.CONNECTED:
            raise ConnectionNotSyncable(connection.status.value)
        spec = catalog.spec(connection.provider)
        caps = {c.entity_type: c for c in spec.capabilities}
        wanted = list(entities) or [
            c.entity_type for c in spec.capabilities if self._allows(c.directions, direction)
        ]
        for i, entity in enumerate(wanted):
            cap = caps.get(entity)
            if cap is None:
                raise EntityNotSynced(
                    f"entity_types[{i}]",
                    f"{spec.display_name} does not sync {entity.value.lower()}s",
                )
            if not self._allows(cap.directions, direction):
                raise EntityNotSynced(
                    "direction",
                    f"{spec.display_name} does not sync {entity.value.lower()}s "
                    f"{direction.value.lower()}",
                )
        if not wanted:
            raise EntityNotSynced("entity_types", "nothing to sync in that direction")
        job_id = uuid.uuid4()
        names = [e.value for e in wanted]
        for _ in range(3):
            try:
                async with self._db.transaction() as conn:
                    since: dict[str, int] = {}
                    if mode == "INCREMENTAL":
                        for name in names:
                            pushed, _, _ = await s.cursor(conn, connection_id, name, "PUSH")
                            since[name] = pushed
                    await s.insert_job(
                        conn,
                        job_id=job_id,
                        connection_id=connection_id,
                        venue_id=connection.venue_id,
                        provider=connection.provider.value,
                        direction=direction.value,
                        mode=mode,
                        entities=names,
                        since_seq=since,
                        only_ids=only_ids,
                        requested_by=actor.subject,
                    )
                    job = await s.get_job(conn, job_id)
                    assert job is not None
                    await s.add_progress(conn, job)
                    await s.log(
                        conn,
                        job,
                        "INFO",
                        "job queued",
                        details={"mode": mode, "direction": direction.value, "by": actor.subject},
                    )
            except asyncpg.UniqueViolationError:
                running, names = await self._answer_active(
                    connection_id, names, direction=direction, mode=mode
                )
                if running is not None and not names:
                    return running
                continue
            if self._wake is not None:
                self._wake.set()
            return job
        raise SyncJobNotFound()  # pragma: no cover - the active job kept finishing under us

    async def _answer_active(
        self, connection_id: uuid.UUID, names: Sequence[str], *, direction: Direction, mode: str
    ) -> tuple[s.Job | None, list[str]]:
        """A job is active on some of `names`: (that job, the entity types no job is active on,
        still to queue). Unless this is a retry of dead letters, the active jobs are asked for
        a follow-up (nothing that reached the mirror after one read its last batch stays
        behind until a schedule)."""
        async with self._db.transaction() as conn:
            if mode == "RETRY":
                running = await s.active_job_for(conn, connection_id, names)
                return running, []
            active = await s.request_rerun(
                conn,
                connection_id,
                names,
                push=direction in (Direction.PUSH, Direction.BIDIRECTIONAL),
                pull=direction in (Direction.PULL, Direction.BIDIRECTIONAL),
                full=mode == "FULL",
            )
            if not active:
                return None, list(names)
            running = await s.get_job(conn, active[0][0])
        taken = {entity for _, entity in active}
        return running, [n for n in names if n not in taken]

    @staticmethod
    def _allows(directions: Sequence[Direction], direction: Direction) -> bool:
        if direction is Direction.BIDIRECTIONAL:
            return Direction.PUSH in directions and Direction.PULL in directions
        return direction in directions

    async def cancel(self, actor: Actor, job_id: uuid.UUID) -> s.Job:
        job = await self.job(actor, job_id)
        if job.terminal:
            return job
        async with self._db.transaction() as conn:
            await s.request_cancel(conn, job_id)
            locked = await conn.fetchrow(
                "SELECT status FROM sync_jobs WHERE id = $1 FOR UPDATE", job_id
            )
            if locked is not None and locked["status"] == "PENDING":
                done = await s.finish_job(
                    conn, job_id, "CANCELLED", error_code="cancelled", error_message="cancelled"
                )
                await s.add_progress(conn, done)
                await s.log(conn, done, "INFO", "job cancelled before it started")
        return await self.job(actor, job_id)

    async def watch(
        self, actor: Actor, job_id: uuid.UUID, after_seq: int
    ) -> AsyncIterator[tuple[s.Job, s.Progress | None]]:
        """The job's progress rows after `after_seq` as they are written, until a final state
        (the first item is the current state when `after_seq` is 0). Polls the progress table:
        a watcher holds no connection between polls and costs the job nothing."""
        job = await self.job(actor, job_id)
        last = after_seq
        if after_seq == 0:
            yield job, None
            last = job.progress_seq
            if job.terminal:
                return
        while True:
            async with self._db.acquire() as conn:
                rows = await s.progress_after(conn, job_id, last)
            for row in rows:
                last = row.seq
                if row.status in s.TERMINAL:
                    async with self._db.acquire() as conn:
                        job = await s.get_job(conn, job_id) or job  # its error and finish time
                    yield job, row
                    return
                yield job, row
            if not rows:
                await asyncio.sleep(self.watch_poll_s)

    async def logs(
        self,
        actor: Actor,
        *,
        connection_id: uuid.UUID | None,
        job_id: uuid.UUID | None,
        levels: Sequence[str] | None,
        logged_from: datetime | None,
        logged_to: datetime | None,
        before_seq: int | None,
        limit: int,
    ) -> list[s.LogRow]:
        if job_id is not None:
            await self.job(actor, job_id)
        if connection_id is not None:
            async with self._db.acquire() as conn:
                await self._connection(conn, actor, connection_id)
        async with self._db.acquire() as conn:
            return await s.list_logs(
                conn,
                connection_id=connection_id,
                job_id=job_id,
                levels=levels,
                logged_from=logged_from,
                logged_to=logged_to,
                before_seq=before_seq,
                limit=limit,
            )

    async def dead_letters(
        self,
        actor: Actor,
        connection_id: uuid.UUID,
        *,
        job_id: uuid.UUID | None,
        entity: EntityType | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[s.DeadLetterRow]:
        async with self._db.acquire() as conn:
            await self._connection(conn, actor, connection_id)
            return await s.list_dead_letters(
                conn,
                connection_id,
                job_id=job_id,
                entity=entity.value if entity else None,
                limit=limit,
                after=after,
            )

    async def retry(
        self, actor: Actor, connection_id: uuid.UUID, ids: Sequence[uuid.UUID] | None
    ) -> tuple[int, s.Job | None]:
        """Queue a RETRY job over the given open dead letters (all when None): their records
        are mapped and written again (a fixed mapping now applies)."""
        async with self._db.acquire() as conn:
            await self._connection(conn, actor, connection_id)
            letters = await s.dead_letters_by_id(conn, connection_id, ids)
        push = [d for d in letters if d.direction == "PUSH"]
        if not push:
            return 0, None
        only: dict[str, list[str]] = {}
        for d in push:
            only.setdefault(d.entity, []).append(d.internal_id)
        job = await self.start(
            actor,
            connection_id,
            entities=[EntityType(e) for e in only],
            direction=Direction.PUSH,
            mode="RETRY",
            only_ids=only,
        )
        return len(push), job

    # -- schedules ------------------------------------------------------------------------------
    async def set_schedule(
        self,
        actor: Actor,
        connection_id: uuid.UUID,
        *,
        entities: Sequence[EntityType],
        direction: Direction,
        interval_s: int,
        enabled: bool,
    ) -> s.Schedule:
        async with self._db.acquire() as conn:
            connection = await self._connection(conn, actor, connection_id)
        spec = catalog.spec(connection.provider)
        caps = {c.entity_type: c for c in spec.capabilities}
        for i, entity in enumerate(entities):
            cap = caps.get(entity)
            if cap is None or not self._allows(cap.directions, direction):
                raise EntityNotSynced(
                    f"entity_types[{i}]",
                    f"{spec.display_name} does not sync {entity.value.lower()}s that way",
                )
        async with self._db.transaction() as conn:
            return await s.set_schedule(
                conn,
                connection_id,
                entities=[e.value for e in entities],
                direction=direction.value,
                interval_s=interval_s,
                enabled=enabled,
            )

    async def get_schedule(self, actor: Actor, connection_id: uuid.UUID) -> s.Schedule | None:
        async with self._db.acquire() as conn:
            await self._connection(conn, actor, connection_id)
            return await s.get_schedule(conn, connection_id)

    async def run_schedules(self, limit: int = 100) -> int:
        """Queue an incremental job for every due schedule (the leased job: one replica at a
        time); how many were queued (a schedule whose sync is still running is moved on)."""
        queued = 0
        async with self._db.transaction() as conn:
            due = await s.due_schedules(conn, limit)
            for schedule in due:
                await s.schedule_ran(conn, schedule.connection_id, None)
        for schedule in due:
            try:
                job = await self.start(
                    SYSTEM_ADMIN,
                    schedule.connection_id,
                    entities=[EntityType(e) for e in schedule.entities],
                    direction=Direction(schedule.direction),
                    mode="INCREMENTAL",
                )
            except Exception:
                _log.warning(
                    "scheduled sync not queued",
                    extra={"connection_id": str(schedule.connection_id)},
                    exc_info=True,
                )
                continue
            async with self._db.acquire() as conn:
                await s.schedule_ran(conn, schedule.connection_id, job.id)
            queued += 1
        return queued


SYSTEM_ADMIN = Actor(SYSTEM.subject, admin=True)
"""The schedules' actor: the service itself, over every venue."""
