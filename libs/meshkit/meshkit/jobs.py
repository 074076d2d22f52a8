"""Background work with one shape: `run()` until `stop()`, finishing the current step.

The server starts every registered worker after the gRPC server is up and stops them after the
RPCs have drained, so a relay or a purge never sees its pool closed under it. Three kinds:

* `PollingWorker` — a queue consumer: calls `step()` again at once while it reports more work,
  waits `idle_s` when the queue looked empty, backs off (capped, jittered) while steps fail;
* `PeriodicJob` — calls a function every `interval` seconds on every replica (for work that is
  safe to run concurrently, such as purges);
* `LeasedJob` — a periodic job that runs on one replica at a time: it holds a Redis lease while
  it runs, renews the lease while the run lasts, cancels the run if the lease is lost, and
  releases it when the run ends (so the next run, anywhere, need not wait for it to expire).

Jobs report `job_runs_total{job,outcome}`, `job_run_seconds{job}` and
`job_last_success_timestamp_seconds{job}` when given a registry.

Every log line of background work carries a trace id: each run of a periodic or leased job and
each step of a polling worker runs in a trace of its own, for its log lines only — never
recorded nor sampled (most polls find nothing to do, purges run every minute: an exporter would
drown in them, and job_runs_total / job_run_seconds already describe the runs). Work done inside
for one queued item continues that item's own trace, and is recorded as that trace is (e.g. a
relay delivers each event under `continue_trace(<the event's traceparent>)`, a minter announces
each ticket's outcome in its MintTickets request's trace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["JobMetrics", "Lease", "LeasedJob", "PeriodicJob", "PollingWorker", "Worker"]

_log = logging.getLogger("meshkit.jobs")


class Worker(Protocol):
    """Anything the server can run in the background (e.g. an outbox relay)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class JobMetrics:
    """Run counts, durations and last success per job, shared by every job on one registry."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, JobMetrics] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "job_runs",
            "Background job runs by outcome (ok, error, skipped: another replica holds the "
            "lease, lost: the lease was lost mid-run).",
            ["job", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "job_run_seconds", "Duration of background job runs.", ["job"], registry=registry
        )
        self.last_success = Gauge(
            "job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run.",
            ["job"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> JobMetrics:
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics


def _log_only_span() -> NonRecordingSpan:
    """A span with a fresh trace id for the log lines of a job's run or a worker's step: not
    recorded and not sampled, so nothing started under it (downstream included) is recorded
    either."""
    return NonRecordingSpan(
        SpanContext(
            random.getrandbits(128) or 1,
            random.getrandbits(64) or 1,
            False,
            TraceFlags(TraceFlags.DEFAULT),
        )
    )


class _Stoppable:
    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask `run()` to return once the step in progress is finished."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early on stop() so shutdown never waits out an interval."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), max(0.0, seconds))


class PollingWorker(_Stoppable):
    """Calls `step()` until stopped. `step` returns True when more work may be waiting right
    now (e.g. it claimed a full batch): it is called again at once; False: after `idle_s`, or
    as soon as `wake` is set (whoever enqueues work in this process sets it, so an idle worker
    starts at once instead of at its next poll). A failing step is logged and retried after a
    backoff doubling from `idle_s` up to `max_backoff_s`, with jitter, so a down database is
    not hammered."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[bool]],
        *,
        idle_s: float,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        super().__init__()
        if idle_s <= 0:
            raise ValueError("idle_s must be positive")
        self.name = name
        self._step = step
        self.idle_s = idle_s
        self.max_backoff_s = max_backoff_s
        self._rng = rng or random.Random()
        self._wake = wake

    def stop(self) -> None:
        super().stop()
        if self._wake is not None:
            self._wake.set()  # end an idle wait at once

    async def _idle(self) -> None:
        if self._wake is None:
            await self._sleep(self.idle_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.idle_s)
        self._wake.clear()

    async def run(self) -> None:
        _log.info("worker started", extra={"worker": self.name})
        failures = 0
        while not self.stopping:
            failed = False
            with trace.use_span(_log_only_span()):
                try:
                    more = await self._step()
                except Exception:
                    failed = True
                    failures += 1
                    _log.exception(
                        "worker step failed", extra={"worker": self.name, "failures": failures}
                    )
            if failed:
                ceiling = min(self.max_backoff_s, self.idle_s * 2.0 ** min(failures, 30))
                await self._sleep(self._rng.uniform(ceiling / 2, ceiling))
                continue
            failures = 0
            if not more:
                await self._idle()
        _log.info("worker stopped", extra={"worker": self.name})


class PeriodicJob(_Stoppable):
    """Calls `fn` every `interval` seconds until stopped; failures are logged, never fatal."""

    def __init__(
        self,
        name: str,
        interval: float,
        fn: Callable[[], Awaitable[object]],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self._interval = interval
        self._fn = fn
        self._metrics = JobMetrics.for_registry(registry) if registry is not None else None

    async def run(self) -> None:
        while not self.stopping:
            await self.run_once()
            await self._sleep(self._interval)

    async def run_once(self) -> str:
        """One run now, in a (log-only) trace of its own; returns its outcome (`ok` or
        `error`)."""
        started = time.perf_counter()
        with trace.use_span(_log_only_span()):
            try:
                await self._fn()
            except Exception:
                _log.exception("periodic job failed", extra={"job": self.name})
                outcome = "error"
            else:
                outcome = "ok"
        self._record(outcome, time.perf_counter() - started)
        return outcome

    async def _invoke(self) -> None:
        await self._fn()

    def _record(self, outcome: str, seconds: float | None) -> None:
        if self._metrics is None:
            return
        self._metrics.runs.labels(self.name, outcome).inc()
        if seconds is not None:
            self._metrics.seconds.labels(self.name).observe(seconds)
        if outcome == "ok":
            self._metrics.last_success.labels(self.name).set(time.time())


# KEYS[1] lease key, ARGV[1] our token, ARGV[2] lease in ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """A Redis lease on `key`: held by one token at a time, for `ttl_s` unless renewed.

    Acquire is `SET NX PX`; renew and release are atomic compare-and-set scripts, so a holder
    whose lease expired (and was taken by another) can neither extend nor delete the new one."""

    def __init__(self, redis: aioredis.Redis, key: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._redis = redis
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = ""

    async def acquire(self) -> bool:
        token = uuid.uuid4().hex
        if await self._redis.set(self.key, token, nx=True, px=self.ttl_ms):
            self.token = token
            return True
        return False

    async def renew(self) -> bool:
        """Extend the lease; False when it is no longer ours."""
        if not self.token:
            return False
        return bool(await self._redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> None:
        if self.token:
            token, self.token = self.token, ""
            await self._redis.eval(_RELEASE, 1, self.key, token)


class LeasedJob(PeriodicJob):
    """A periodic job that runs on one replica at a time (module doc).

    Every `interval` seconds each replica tries the lease `lease:<name>` (under `key_prefix`);
    the holder runs `fn` while renewing the lease every third of `lease_s`. If a renewal finds
    the lease gone (Redis lost it, or the run outlived a stalled renewal), the run is cancelled
    at its next await: two replicas never run it at once for longer than one renewal period.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        fn: Callable[[], Awaitable[object]],
        *,
        redis: aioredis.Redis,
        key_prefix: str,
        lease_s: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(name, interval, fn, registry=registry)
        self._lease = Lease(redis, f"{key_prefix}:lease:{name}", lease_s)
        self._renew_every = lease_s / 3

    @property
    def lease(self) -> Lease:
        return self._lease

    async def run_once(self) -> str:
        """Try the lease and, when it is ours, run once; returns the outcome
        (`ok`, `error`, `skipped` or `lost`)."""
        try:
            acquired = await self._lease.acquire()
        except Exception:
            _log.warning("job lease unavailable", extra={"job": self.name}, exc_info=True)
            self._record("error", None)
            return "error"
        if not acquired:
            self._record("skipped", None)
            return "skipped"
        with trace.use_span(_log_only_span()):
            return await self._run_leased()

    async def _run_leased(self) -> str:
        """The run, while we renew the lease (the run's task inherits the run's trace)."""
        started = time.perf_counter()
        work: asyncio.Task[None] = asyncio.create_task(self._invoke(), name=f"job:{self.name}")
        lost = False
        try:
            while not work.done():
                done, _ = await asyncio.wait({work}, timeout=self._renew_every)
                if done:
                    break
                try:
                    still_ours = await self._lease.renew()
                except Exception:
                    _log.warning("job lease renewal failed", extra={"job": self.name})
                    continue  # the next renewal may succeed before the lease runs out
                if not still_ours:
                    lost = True
                    _log.error("job lease lost; cancelling the run", extra={"job": self.name})
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
                    break
        finally:
            if not work.done():  # we are being cancelled ourselves
                work.cancel()
            with contextlib.suppress(Exception):
                await self._lease.release()
        if lost:
            outcome = "lost"
        elif work.cancelled():
            outcome = "error"
        elif work.exception() is not None:
            _log.error("periodic job failed", exc_info=work.exception(), extra={"job": self.name})
            outcome = "error"
        else:
            outcome = "ok"
        self._record(outcome, time.perf_counter() - started)
        return outcome
