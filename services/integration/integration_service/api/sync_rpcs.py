"""The sync RPCs of IntegrationService (issue 14), as a mixin of the servicer: proto in, the
sync use cases (`sync.cases.SyncCases`), proto out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from integration_service.api import access
from integration_service.domain.model import Direction, EntityType
from integration_service.usecases import sync as s
from integration_service.usecases.sync import CatalogEvent, SyncCases, TicketType
from meshkit.idempotency import idempotent
from meshkit.paging import Page
from tickettoken.integration.v1 import integration_pb2 as pb

Context = grpc.aio.ServicerContext[object, object]

_MODE = {pb.SYNC_MODE_FULL: "FULL", pb.SYNC_MODE_INCREMENTAL: "INCREMENTAL"}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _entity(value: int) -> EntityType:
    return EntityType(pb.EntityType.Name(value).removeprefix("ENTITY_TYPE_"))  # type: ignore[arg-type]


def _entity_proto(name: str) -> pb.EntityType.ValueType:
    return pb.EntityType.Value("ENTITY_TYPE_" + name) if name else pb.ENTITY_TYPE_UNSPECIFIED


def _direction(value: int) -> Direction:
    return Direction(pb.SyncDirection.Name(value).removeprefix("SYNC_DIRECTION_"))  # type: ignore[arg-type]


def _direction_proto(name: str) -> pb.SyncDirection.ValueType:
    return pb.SyncDirection.Value("SYNC_DIRECTION_" + name)


def _status_proto(name: str) -> pb.SyncJobStatus.ValueType:
    return pb.SyncJobStatus.Value("SYNC_JOB_STATUS_" + name)


def _phase_proto(name: str) -> pb.SyncPhase.ValueType:
    return pb.SyncPhase.Value("SYNC_PHASE_" + name) if name else pb.SYNC_PHASE_UNSPECIFIED


def _mode_proto(name: str) -> pb.SyncMode.ValueType:
    return pb.SYNC_MODE_FULL if name in ("FULL", "RETRY") else pb.SYNC_MODE_INCREMENTAL


def _stamp(target: object, field: str, value: datetime | None) -> None:
    if value is not None:
        getattr(target, field).FromDatetime(value)


def job_proto(job: s.Job, progress: s.Progress | None = None) -> pb.SyncJob:
    """A job; with `progress`, the counts and state as that progress row recorded them."""
    p = progress
    total = p.records_total if p else job.records_total
    processed = p.records_processed if p else job.records_processed
    status = p.status if p else job.status
    out = pb.SyncJob(
        id=str(job.id),
        connection_id=str(job.connection_id),
        venue_id=job.venue_id,
        provider=pb.Provider.Value("PROVIDER_" + job.provider.upper()),
        status=_status_proto(status),
        direction=_direction_proto(job.direction),
        mode=_mode_proto(job.mode),
        entity_types=[_entity_proto(e) for e in job.entities],
        records_total=total,
        records_processed=processed,
        records_succeeded=p.records_succeeded if p else job.records_succeeded,
        records_failed=p.records_failed if p else job.records_failed,
        records_skipped=p.records_skipped if p else job.records_skipped,
        progress_bps=min(10000, processed * 10000 // total) if total else 0,
        cancel_requested=job.cancel_requested,
        phase=_phase_proto(p.phase if p else job.phase),
    )
    if status in s.TERMINAL:
        out.error_code = job.error_code
        out.error_message = job.error_message
    _stamp(out, "created_at", job.created_at)
    _stamp(out, "started_at", job.started_at)
    _stamp(out, "finished_at", job.finished_at if status in s.TERMINAL else None)
    _stamp(out, "updated_at", p.at if p else job.updated_at)
    return out


def schedule_proto(schedule: s.Schedule) -> pb.SyncSchedule:
    out = pb.SyncSchedule(
        connection_id=str(schedule.connection_id),
        entity_types=[_entity_proto(e) for e in schedule.entities],
        direction=_direction_proto(schedule.direction),
        interval_seconds=schedule.interval_s,
        enabled=schedule.enabled,
        last_job_id=str(schedule.last_job_id) if schedule.last_job_id else "",
    )
    _stamp(out, "next_run_at", schedule.next_run_at if schedule.enabled else None)
    _stamp(out, "last_run_at", schedule.last_run_at)
    _stamp(out, "updated_at", schedule.updated_at)
    return out


class SyncRpcs:
    """IngestCatalog, IngestInventory, StartSync, GetSyncJob, WatchSyncJob, CancelSync,
    ListSyncLogs, ListDeadLetters, RetryDeadLetters, SetSyncSchedule, GetSyncSchedule."""

    sync: SyncCases

    @idempotent
    async def IngestCatalog(
        self, request: pb.IngestCatalogRequest, context: Context
    ) -> pb.IngestCatalogResponse:
        events = [
            CatalogEvent(
                event_id=e.event_id,
                name=e.name,
                description=e.description,
                starts_at=e.starts_at.ToDatetime(UTC) if e.HasField("starts_at") else None,
                venue_name=e.venue_name,
                ticket_types=tuple(
                    TicketType(
                        t.ticket_type_id,
                        t.name,
                        t.description,
                        t.price.amount_minor,
                        t.price.currency,
                    )
                    for t in e.ticket_types
                ),
            )
            for e in request.events
        ]
        result = await self.sync.ingest_catalog(
            access.actor(), request.venue_id, events, complete=request.complete
        )
        return pb.IngestCatalogResponse(
            changed_count=result.changed,
            unchanged_count=result.unchanged,
            deleted_count=result.deleted,
        )

    @idempotent
    async def IngestInventory(
        self, request: pb.IngestInventoryRequest, context: Context
    ) -> pb.IngestInventoryResponse:
        counted = (
            request.counted_at.ToDatetime(UTC)
            if request.HasField("counted_at")
            else datetime.now(UTC)
        )
        result = await self.sync.ingest_inventory(
            access.actor(),
            request.venue_id,
            [(level.ticket_type_id, level.remaining) for level in request.levels],
            counted,
        )
        return pb.IngestInventoryResponse(
            changed_count=result.changed, unchanged_count=result.unchanged
        )

    @idempotent
    async def StartSync(
        self, request: pb.StartSyncRequest, context: Context
    ) -> pb.StartSyncResponse:
        job = await self.sync.start(
            access.actor(),
            uuid.UUID(request.connection_id),
            entities=[_entity(e) for e in request.entity_types],
            direction=_direction(request.direction),
            mode=_MODE.get(request.mode, "INCREMENTAL"),
        )
        return pb.StartSyncResponse(job=job_proto(job))

    async def GetSyncJob(
        self, request: pb.GetSyncJobRequest, context: Context
    ) -> pb.GetSyncJobResponse:
        job = await self.sync.job(access.actor(), uuid.UUID(request.job_id))
        return pb.GetSyncJobResponse(job=job_proto(job))

    async def WatchSyncJob(
        self, request: pb.WatchSyncJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchSyncJobResponse]:
        stream = self.sync.watch(access.actor(), uuid.UUID(request.job_id), request.after_sequence)
        async for job, progress in stream:
            if progress is None:
                yield pb.WatchSyncJobResponse(
                    job=job_proto(job),
                    sequence=job.progress_seq,
                    phase=_phase_proto(job.phase),
                    entity_type=_entity_proto(job.current_entity),
                )
                continue
            yield pb.WatchSyncJobResponse(
                job=job_proto(job, progress),
                sequence=progress.seq,
                phase=_phase_proto(progress.phase),
                rate_per_minute=progress.rate_per_minute,
                eta_seconds=progress.eta_seconds,
                entity_type=_entity_proto(progress.entity),
            )

    @idempotent
    async def CancelSync(
        self, request: pb.CancelSyncRequest, context: Context
    ) -> pb.CancelSyncResponse:
        job = await self.sync.cancel(access.actor(), uuid.UUID(request.job_id))
        return pb.CancelSyncResponse(job=job_proto(job))

    async def ListSyncLogs(
        self, request: pb.ListSyncLogsRequest, context: Context
    ) -> pb.ListSyncLogsResponse:
        page: Page[s.LogRow] = Page.of(request, default_size=100, max_size=1000)
        if not request.connection_id and not request.job_id:
            from integration_service.domain.errors import InvalidInput, Violation

            raise InvalidInput([Violation("connection_id", "connection_id or job_id is required")])
        levels = None
        if request.min_level:
            floor = pb.LogLevel.Name(request.min_level).removeprefix("LOG_LEVEL_")
            levels = list(_LEVELS[_LEVELS.index(floor) :])
        logged = request.logged if request.HasField("logged") else None
        rows = await self.sync.logs(
            access.actor(),
            connection_id=uuid.UUID(request.connection_id) if request.connection_id else None,
            job_id=uuid.UUID(request.job_id) if request.job_id else None,
            levels=levels,
            logged_from=logged.start.ToDatetime(UTC)
            if logged is not None and logged.HasField("start")
            else None,
            logged_to=logged.end.ToDatetime(UTC)
            if logged is not None and logged.HasField("end")
            else None,
            before_seq=int(page.after[0]) if page.after else None,
            limit=page.size + 1,
        )
        shown, token = page.cut(rows, key=lambda r: (r.seq,))
        entries = []
        for r in shown:
            entry = pb.SyncLogEntry(
                id=str(r.id),
                job_id=str(r.job_id),
                connection_id=str(r.connection_id),
                level=pb.LogLevel.Value("LOG_LEVEL_" + r.level),
                message=r.message,
                details=dict(r.details),
            )
            if r.entity:
                entry.record.CopyFrom(
                    pb.RecordRef(
                        entity_type=_entity_proto(r.entity),
                        internal_id=r.internal_id,
                        external_id=r.external_id,
                    )
                )
            entry.logged_at.FromDatetime(r.logged_at)
            entries.append(entry)
        return pb.ListSyncLogsResponse(entries=entries, next_page_token=token)

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Context
    ) -> pb.ListDeadLettersResponse:
        page: Page[s.DeadLetterRow] = Page.of(request, default_size=50, max_size=500)
        after = (
            (datetime.fromisoformat(str(page.after[0])), uuid.UUID(str(page.after[1])))
            if page.after
            else None
        )
        rows = await self.sync.dead_letters(
            access.actor(),
            uuid.UUID(request.connection_id),
            job_id=uuid.UUID(request.job_id) if request.job_id else None,
            entity=_entity(request.entity_type) if request.entity_type else None,
            limit=page.size + 1,
            after=after,
        )
        shown, token = page.cut(rows, key=lambda d: (d.last_failed_at.isoformat(), str(d.id)))
        letters = []
        for d in shown:
            letter = pb.DeadLetter(
                id=str(d.id),
                connection_id=str(d.connection_id),
                job_id=str(d.job_id),
                record=pb.RecordRef(
                    entity_type=_entity_proto(d.entity),
                    internal_id=d.internal_id,
                    external_id=d.external_id,
                ),
                direction=_direction_proto(d.direction),
                error_code=d.error_code,
                error_message=d.error_message,
                attempts=d.attempts,
                retryable=d.retryable,
            )
            letter.first_failed_at.FromDatetime(d.first_failed_at)
            letter.last_failed_at.FromDatetime(d.last_failed_at)
            letters.append(letter)
        return pb.ListDeadLettersResponse(dead_letters=letters, next_page_token=token)

    @idempotent
    async def RetryDeadLetters(
        self, request: pb.RetryDeadLettersRequest, context: Context
    ) -> pb.RetryDeadLettersResponse:
        if request.retry_all == bool(request.dead_letter_ids):
            from integration_service.domain.errors import InvalidInput, Violation

            raise InvalidInput(
                [Violation("dead_letter_ids", "give dead_letter_ids or retry_all, not both")]
            )
        ids = None if request.retry_all else [uuid.UUID(i) for i in request.dead_letter_ids]
        count, job = await self.sync.retry(access.actor(), uuid.UUID(request.connection_id), ids)
        response = pb.RetryDeadLettersResponse(requeued_count=count)
        if job is not None:
            response.job.CopyFrom(job_proto(job))
        return response

    @idempotent
    async def SetSyncSchedule(
        self, request: pb.SetSyncScheduleRequest, context: Context
    ) -> pb.SetSyncScheduleResponse:
        schedule = await self.sync.set_schedule(
            access.actor(),
            uuid.UUID(request.connection_id),
            entities=[_entity(e) for e in request.entity_types],
            direction=_direction(request.direction),
            interval_s=request.interval_seconds,
            enabled=request.enabled,
        )
        return pb.SetSyncScheduleResponse(schedule=schedule_proto(schedule))

    async def GetSyncSchedule(
        self, request: pb.GetSyncScheduleRequest, context: Context
    ) -> pb.GetSyncScheduleResponse:
        found = await self.sync.get_schedule(access.actor(), uuid.UUID(request.connection_id))
        response = pb.GetSyncScheduleResponse()
        if found is not None:
            response.schedule.CopyFrom(schedule_proto(found))
        return response
