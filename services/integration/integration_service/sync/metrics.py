"""The sync engine's metrics, read from the sync tables when Prometheus scrapes.

The jobs, their record counts and the dead letters live in Postgres (shared by every replica and
written by whichever replica runs a job), so the numbers are aggregate queries over those tables
rather than in-process counters: every replica exports the same values (query them with
`max by (...)`, not `sum`).

A registry collector's `collect()` is synchronous, so the tables are read by `refresh_if_due`,
which the service registers as a scrape hook (`kit.on_scrape`): /metrics awaits it before
rendering, so a scrape shows the tables as they are (one read at a time, at most once per
`min_interval_s`, bounded by `timeout_s` as a statement timeout). Collected without a hook (another
registry's dump) it answers the last snapshot and starts a read in the background. A replica
nobody scrapes runs no queries. A read that fails is logged and leaves the previous snapshot
(`integration_sync_metrics_read_ok` says so).

Families:

* `integration_sync_jobs{provider,entity_type,status}` — gauge: active jobs per entity type,
  status `queued` (PENDING, claimable), `backing_off` (PENDING until `not_before`: the provider
  was unavailable) or `running`.
* `integration_sync_records_total{provider,entity_type,direction,outcome}` — counter: the sums of
  every job's succeeded/failed/skipped records (outcome), by the job's entity types.
* `integration_sync_jobs_finished_total{provider,status}` — counter: jobs ended, by status.
* `integration_sync_dead_letters{provider,entity_type}` — gauge: open (unresolved) dead letters.
* `integration_sync_oldest_queued_seconds` — gauge: how long the oldest claimable PENDING job has
  waited for a worker (0 when none).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from integration_service.sync import registry as sync_registry
from meshkit.db import Database

_log = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "backing_off", "running")
OUTCOMES = ("succeeded", "failed", "skipped")
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED", "PARTIAL")

_JOBS = """
SELECT j.provider, e.entity,
       CASE WHEN j.status = 'RUNNING' THEN 'running'
            WHEN j.not_before > now() THEN 'backing_off'
            ELSE 'queued' END AS status,
       count(*) AS n
FROM sync_job_entities e JOIN sync_jobs j ON j.id = e.job_id
WHERE e.active AND j.status IN ('PENDING', 'RUNNING')
GROUP BY 1, 2, 3
"""

# Per job: its entity types in run order (most jobs have one), then summed per label set.
_RECORDS = """
SELECT j.provider, coalesce(e.entities, '') AS entities, j.direction, j.status,
       count(*) AS jobs,
       sum(j.records_succeeded)::bigint AS succeeded,
       sum(j.records_failed)::bigint AS failed,
       sum(j.records_skipped)::bigint AS skipped
FROM sync_jobs j
LEFT JOIN LATERAL (
    SELECT string_agg(entity, ',' ORDER BY position) AS entities
    FROM sync_job_entities WHERE job_id = j.id
) e ON true
GROUP BY 1, 2, 3, 4
"""

_DEAD_LETTERS = """
SELECT c.provider, d.entity, count(*) AS n
FROM sync_dead_letters d JOIN connections c ON c.id = d.connection_id
WHERE NOT d.resolved
GROUP BY 1, 2
"""

_OLDEST_QUEUED = """
SELECT coalesce(extract(epoch FROM now() - min(greatest(created_at, not_before))), 0)::float8
FROM sync_jobs
WHERE status = 'PENDING' AND (not_before IS NULL OR not_before <= now())
"""


@dataclass
class SyncSnapshot:
    """What the sync tables held at one read."""

    jobs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    records: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    finished: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_queued_s: float = 0.0


def _known_pairs() -> list[tuple[str, str]]:
    """(provider, entity type) of every writer and reader: their series start at 0, so a dead
    letter or a queued job is a change of a series that already exists."""
    sync_registry.load()
    pairs = {(p.value, e.value) for p, e in [*sync_registry.WRITERS, *sync_registry.READERS]}
    return sorted(pairs)


async def read_snapshot(db: Database, timeout_s: float) -> SyncSnapshot:
    """Read the sync tables (one read-only transaction, each statement bounded by timeout_s)."""
    snap = SyncSnapshot()
    async with db.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
        for row in await conn.fetch(_JOBS):
            snap.jobs[(row["provider"], row["entity"], row["status"])] = int(row["n"])
        for row in await conn.fetch(_RECORDS):
            labels = (row["provider"], row["entities"], row["direction"])
            for outcome in OUTCOMES:
                key = (*labels, outcome)
                snap.records[key] = snap.records.get(key, 0) + int(row[outcome])
            if row["status"] in FINISHED:
                key2 = (row["provider"], row["status"].lower())
                snap.finished[key2] = snap.finished.get(key2, 0) + int(row["jobs"])
        for row in await conn.fetch(_DEAD_LETTERS):
            snap.dead_letters[(row["provider"], row["entity"])] = int(row["n"])
        snap.oldest_queued_s = float(await conn.fetchval(_OLDEST_QUEUED))
    return snap


class SyncMetrics(Collector):
    """The sync families from the last snapshot; each collect() refreshes it in the background.

    Built once in app.py: `kit.on_stop(SyncMetrics(kit.db, kit.registry).close)`."""

    def __init__(
        self,
        db: Database,
        registry: CollectorRegistry,
        *,
        min_interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._db = db
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._pairs = _known_pairs()
        self._snapshot = SyncSnapshot()
        self._read_ok = False
        self._last_read = float("-inf")
        self._task: asyncio.Task[None] | None = None
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return self._families(SyncSnapshot(), read_ok=False)

    def collect(self) -> Iterator[Metric]:
        self._refresh_soon()
        return self._families(self._snapshot, read_ok=self._read_ok)

    async def refresh(self) -> None:
        """Read the tables now (the background read; tests may await it directly)."""
        try:
            self._snapshot = await asyncio.wait_for(
                read_snapshot(self._db, self._timeout_s), self._timeout_s * 2
            )
            self._read_ok = True
        except Exception:  # a scrape must not fail: keep the previous snapshot
            _log.warning("sync metrics: reading the sync tables failed", exc_info=True)
            self._read_ok = False

    async def refresh_if_due(self) -> None:
        """The scrape hook: read now unless a read ran within `min_interval_s`; join a read
        already under way."""
        self._refresh_soon()
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)  # a scrape that gives up leaves the read to finish

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _refresh_soon(self) -> None:
        if self._task is not None and not self._task.done():
            return
        now = time.monotonic()
        if now - self._last_read < self._min_interval_s:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # collected outside the service's loop (a CLI dump): no refresh
            return
        self._last_read = now
        self._task = loop.create_task(self.refresh(), name="integration-sync-metrics")

    def _families(self, snap: SyncSnapshot, *, read_ok: bool) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "integration_sync_jobs",
            "Active sync jobs per entity type: queued (claimable), backing_off (waiting after "
            "a provider outage), running. Read from the shared tables: every replica reports "
            "the same value.",
            labels=("provider", "entity_type", "status"),
        )
        counts = (
            dict.fromkeys(((p, e, s) for p, e in self._pairs for s in ACTIVE_STATUSES), 0)
            | snap.jobs
        )
        for labels, n in sorted(counts.items()):
            jobs.add_metric(labels, n)
        yield jobs

        records = CounterMetricFamily(
            "integration_sync_records",
            "Records processed by sync jobs, by outcome (succeeded, failed, skipped): the sum "
            "over the jobs in the database, labelled with each job's entity types in run "
            "order (comma-joined). May reset when old jobs are purged; rate() handles resets.",
            labels=("provider", "entity_type", "direction", "outcome"),
        )
        for labels4, n in sorted(snap.records.items()):
            records.add_metric(labels4, n)
        yield records

        finished = CounterMetricFamily(
            "integration_sync_jobs_finished",
            "Sync jobs ended, by status (succeeded, failed, cancelled, partial): a count of the "
            "jobs in the database. May reset when old jobs are purged; rate() handles resets.",
            labels=("provider", "status"),
        )
        for labels2, n in sorted(snap.finished.items()):
            finished.add_metric(labels2, n)
        yield finished

        dead = GaugeMetricFamily(
            "integration_sync_dead_letters",
            "Open (unresolved) sync dead letters: records that failed and wait for "
            "RetryDeadLetters.",
            labels=("provider", "entity_type"),
        )
        for labels2, n in sorted((dict.fromkeys(self._pairs, 0) | snap.dead_letters).items()):
            dead.add_metric(labels2, n)
        yield dead

        yield GaugeMetricFamily(
            "integration_sync_oldest_queued_seconds",
            "Seconds the oldest claimable queued sync job has waited for a worker (0: none).",
            value=snap.oldest_queued_s,
        )
        yield GaugeMetricFamily(
            "integration_sync_metrics_read_ok",
            "1 when the last read of the sync tables for these metrics succeeded.",
            value=1 if read_ok else 0,
        )
