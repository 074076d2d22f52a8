"""IdempotencyStore against real PostgreSQL: replay, reuse, concurrency, recovery, expiry."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import wrappers_pb2

from meshkit.context import CallInfo, Principal, call_var, request_id_var
from meshkit.db import Database
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ReplayedError,
    Unavailable,
    status_for,
)
from meshkit.idempotency import (
    REASON_IN_PROGRESS,
    REASON_KEY_REUSED,
    IdempotencyStore,
    request_fingerprint,
)

DOMAIN = "test.tickettoken.dev"
SCOPE = "/tickettoken.payment.v1.PaymentService/CreatePayment"
ALICE = "user-alice"
BOB = "user-bob"

Handler = Callable[[], Awaitable[wrappers_pb2.StringValue]]


class CountingHandler:
    """Returns a different response on every run, so a replay is distinguishable from a rerun."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    async def __call__(self) -> wrappers_pb2.StringValue:
        self.calls += 1
        n = self.calls
        if self.delay:
            await asyncio.sleep(self.delay)
        return wrappers_pb2.StringValue(value=f"response-{n}")


def req(text: str = "charge 100 EUR") -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=text)


def new_key() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def store(database: Database) -> IdempotencyStore:
    return IdempotencyStore(database, domain=DOMAIN)


async def run(
    store: IdempotencyStore,
    request: wrappers_pb2.StringValue,
    handler: Handler,
    key: str,
    principal: str = ALICE,
) -> bytes:
    return await store.run(request, handler, key=key, scope=SCOPE, principal=principal)


async def row_state(db: Database, key: str, principal: str = ALICE) -> str | None:
    rows = await db.fetch(
        "SELECT state FROM idempotency_keys WHERE scope = $1 AND principal = $2 AND key = $3",
        SCOPE,
        principal,
        key,
    )
    return rows[0]["state"] if rows else None


async def test_sequential_duplicate_replays_byte_identical_response(
    store: IdempotencyStore, database: Database
) -> None:
    handler = CountingHandler()
    key = new_key()
    first = await run(store, req(), handler, key)
    second = await run(store, req(), handler, key)
    assert handler.calls == 1
    assert first == second
    assert first == wrappers_pb2.StringValue(value="response-1").SerializeToString(
        deterministic=True
    )
    rows = await database.fetch(
        "SELECT state, response, fingerprint, lock_token FROM idempotency_keys WHERE key = $1",
        key,
    )
    assert rows[0]["state"] == "COMPLETED"
    assert bytes(rows[0]["response"]) == first
    assert bytes(rows[0]["fingerprint"]) == request_fingerprint(req())
    assert rows[0]["lock_token"] is None


async def test_fifty_concurrent_identical_requests_run_the_handler_once(
    store: IdempotencyStore,
) -> None:
    handler = CountingHandler(delay=0.05)
    key = new_key()
    results = await asyncio.gather(
        *(run(store, req(), handler, key) for _ in range(50)), return_exceptions=True
    )
    assert handler.calls == 1
    expected = wrappers_pb2.StringValue(value="response-1").SerializeToString(deterministic=True)
    successes = [r for r in results if isinstance(r, bytes)]
    aborted = [r for r in results if isinstance(r, Aborted)]
    assert len(successes) + len(aborted) == 50, [r for r in results if not isinstance(r, bytes)]
    assert successes and all(r == expected for r in successes)
    for err in aborted:
        assert err.reason == REASON_IN_PROGRESS
        assert err.retry_after is not None and 0.5 <= err.retry_after <= store.lock_timeout
    # Every aborted caller that retries gets the stored response.
    assert await run(store, req(), handler, key) == expected
    assert handler.calls == 1


async def test_same_key_different_request_is_refused(store: IdempotencyStore) -> None:
    handler = CountingHandler()
    key = new_key()
    await run(store, req("charge 100 EUR"), handler, key)
    with pytest.raises(FailedPrecondition) as info:
        await run(store, req("charge 999 EUR"), handler, key)
    assert info.value.reason == REASON_KEY_REUSED
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert handler.calls == 1


async def test_concurrent_duplicate_while_in_progress_is_aborted(
    store: IdempotencyStore,
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> wrappers_pb2.StringValue:
        entered.set()
        await release.wait()
        return wrappers_pb2.StringValue(value="done")

    key = new_key()
    first = asyncio.create_task(run(store, req(), slow, key))
    await asyncio.wait_for(entered.wait(), 5)

    with pytest.raises(Aborted) as info:
        await run(store, req(), CountingHandler(), key)
    assert info.value.reason == REASON_IN_PROGRESS
    assert info.value.retry_after is not None
    # Retry within a heartbeat: a live holder has usually finished by then.
    assert 0.5 <= info.value.retry_after <= store.heartbeat_interval
    status = status_for(info.value, DOMAIN)
    assert any(d.type_url.endswith("google.rpc.RetryInfo") for d in status.details)

    # A different request under the same key is refused even while the first one runs.
    with pytest.raises(FailedPrecondition):
        await run(store, req("other"), CountingHandler(), key)

    release.set()
    stored = await first
    assert await run(store, req(), CountingHandler(), key) == stored


async def test_started_row_of_a_dead_holder_is_recovered(
    store: IdempotencyStore, database: Database
) -> None:
    key = new_key()
    # A holder that crashed two minutes ago: its lock (5 s) has expired, its heartbeat stopped.
    await database.execute(
        """
        INSERT INTO idempotency_keys
            (scope, principal, key, fingerprint, state, lock_token, locked_at, expires_at)
        VALUES ($1, $2, $3, $4, 'STARTED', $5, now() - interval '2 minutes',
                now() + interval '1 day')
        """,
        SCOPE,
        ALICE,
        key,
        request_fingerprint(req()),
        uuid.uuid4(),
    )
    handler = CountingHandler(delay=0.05)
    # Several callers find it at once: exactly one takes over, the rest see it in progress.
    results = await asyncio.gather(
        *(run(store, req(), handler, key) for _ in range(10)), return_exceptions=True
    )
    assert handler.calls == 1
    assert all(isinstance(r, bytes | Aborted) for r in results), results
    assert await row_state(database, key) == "COMPLETED"
    assert await run(store, req(), handler, key) == wrappers_pb2.StringValue(
        value="response-1"
    ).SerializeToString(deterministic=True)


async def test_started_row_with_live_lock_is_not_taken_over(
    store: IdempotencyStore, database: Database
) -> None:
    key = new_key()
    await database.execute(
        """
        INSERT INTO idempotency_keys
            (scope, principal, key, fingerprint, state, lock_token, locked_at, expires_at)
        VALUES ($1, $2, $3, $4, 'STARTED', $5, now() - interval '2 seconds',
                now() + interval '1 day')
        """,
        SCOPE,
        ALICE,
        key,
        request_fingerprint(req()),
        uuid.uuid4(),
    )
    handler = CountingHandler()
    with pytest.raises(Aborted) as info:
        await run(store, req(), handler, key)
    # Last seen 2 s ago, 5 s lock: alive. Retry within a heartbeat.
    assert info.value.retry_after is not None
    assert 0.5 <= info.value.retry_after <= store.heartbeat_interval
    assert handler.calls == 0


async def test_heartbeat_keeps_a_slow_handler_from_being_taken_over(database: Database) -> None:
    store = IdempotencyStore(database, domain=DOMAIN, lock_timeout=0.6, ttl=60)
    handler = CountingHandler(delay=1.3)
    key = new_key()
    slow = asyncio.create_task(run(store, req(), handler, key))
    await asyncio.sleep(1.0)  # well past the lock timeout, but the holder is alive
    with pytest.raises(Aborted):
        await run(store, req(), handler, key)
    await slow
    assert handler.calls == 1


async def test_final_error_is_stored_and_replayed(
    store: IdempotencyStore, database: Database
) -> None:
    calls = 0

    async def missing() -> wrappers_pb2.StringValue:
        nonlocal calls
        calls += 1
        raise NotFound("order not found", reason="ORDER_NOT_FOUND", metadata={"order": "o-1"})

    key = new_key()
    with pytest.raises(NotFound) as first:
        await run(store, req(), missing, key)
    assert await row_state(database, key) == "FAILED"

    with pytest.raises(ReplayedError) as replay:
        await run(store, req(), missing, key)
    assert calls == 1
    assert replay.value.code is grpc.StatusCode.NOT_FOUND
    assert replay.value.reason == "ORDER_NOT_FOUND"
    assert replay.value.status_proto == status_for(first.value, DOMAIN)
    # Replaying the replay is stable too.
    with pytest.raises(ReplayedError) as again:
        await run(store, req(), missing, key)
    assert again.value.status_proto == replay.value.status_proto


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("provider down"),
        Aborted("conflict"),
        InvalidArgument("bad line item"),
        Internal("bug"),
        RuntimeError("unexpected"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_retryable_error_releases_the_key(
    store: IdempotencyStore, database: Database, error: Exception
) -> None:
    calls = 0

    async def flaky() -> wrappers_pb2.StringValue:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return wrappers_pb2.StringValue(value="ok")

    key = new_key()
    with pytest.raises(type(error)):
        await run(store, req(), flaky, key)
    assert await row_state(database, key) is None
    assert await run(store, req(), flaky, key) == wrappers_pb2.StringValue(
        value="ok"
    ).SerializeToString(deterministic=True)
    assert calls == 2


async def test_final_code_with_retry_info_releases_the_key(
    store: IdempotencyStore, database: Database
) -> None:
    """NOT_FOUND carrying RetryInfo (the thing is on its way, e.g. a ticket whose MintTickets has
    not arrived) is not stored: the same key runs again and gets the answer once it exists."""
    calls = 0

    async def not_yet() -> wrappers_pb2.StringValue:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NotFound("ticket not yet known", reason="TICKET_NOT_FOUND", retry_after=1.0)
        return wrappers_pb2.StringValue(value="revoked")

    key = new_key()
    with pytest.raises(NotFound):
        await run(store, req(), not_yet, key)
    assert await row_state(database, key) is None
    assert await run(store, req(), not_yet, key) == wrappers_pb2.StringValue(
        value="revoked"
    ).SerializeToString(deterministic=True)
    # Now completed: a third call replays the stored answer without running the handler.
    assert await run(store, req(), not_yet, key) == wrappers_pb2.StringValue(
        value="revoked"
    ).SerializeToString(deterministic=True)
    assert calls == 2


async def test_cancelled_handler_releases_the_key(
    store: IdempotencyStore, database: Database
) -> None:
    entered = asyncio.Event()

    async def hangs() -> wrappers_pb2.StringValue:
        entered.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    key = new_key()
    task = asyncio.create_task(run(store, req(), hangs, key))
    await asyncio.wait_for(entered.wait(), 5)
    assert await row_state(database, key) == "STARTED"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await row_state(database, key) is None
    handler = CountingHandler()
    await run(store, req(), handler, key)
    assert handler.calls == 1


async def test_keys_are_scoped_per_principal(store: IdempotencyStore) -> None:
    handler = CountingHandler()
    key = new_key()
    alice = await run(store, req(), handler, key, principal=ALICE)
    bob = await run(store, req(), handler, key, principal=BOB)
    assert handler.calls == 2
    assert alice != bob
    assert await run(store, req(), handler, key, principal=BOB) == bob


async def test_invalid_keys_are_rejected_without_storing(
    store: IdempotencyStore, database: Database
) -> None:
    handler = CountingHandler()
    for bad in ("", "k" * 256):
        with pytest.raises(InvalidArgument) as info:
            await run(store, req(), handler, bad)
        assert [v.field for v in info.value.field_violations] == ["idempotency_key"]
    assert handler.calls == 0
    assert await database.fetch("SELECT * FROM idempotency_keys") == []
    await run(store, req(), handler, "k" * 255)
    assert handler.calls == 1


async def test_scope_and_principal_default_to_the_current_call(
    store: IdempotencyStore, database: Database
) -> None:
    handler = CountingHandler()
    with pytest.raises(RuntimeError, match="scope="):
        await store.run(req(), handler, key=new_key())
    with pytest.raises(TypeError, match="idempotency_key"):
        await store.run(req(), handler, scope=SCOPE, principal=ALICE)

    key = new_key()
    call_token = call_var.set(
        CallInfo(
            method=SCOPE, request_id="req-42", principal=Principal("svc:payment"), deadline=None
        )
    )
    rid_token = request_id_var.set("req-42")
    try:
        await store.run(req(), handler, key=key)
    finally:
        call_var.reset(call_token)
        request_id_var.reset(rid_token)
    rows = await database.fetch(
        "SELECT scope, principal, request_id FROM idempotency_keys WHERE key = $1", key
    )
    assert [tuple(r) for r in rows] == [(SCOPE, "svc:payment", "req-42")]


async def test_expired_rows_count_as_absent_and_are_purged(
    store: IdempotencyStore, database: Database
) -> None:
    handler = CountingHandler()
    done, failed, live, fresh = new_key(), new_key(), new_key(), new_key()
    await run(store, req(), handler, done)

    async def reject() -> wrappers_pb2.StringValue:
        raise FailedPrecondition("sold out")

    with pytest.raises(FailedPrecondition):
        await run(store, req(), reject, failed)
    await run(store, req(), handler, fresh)
    # A STARTED row whose holder is alive must survive the purge even past its expiry.
    await database.execute(
        """
        INSERT INTO idempotency_keys
            (scope, principal, key, fingerprint, state, lock_token, locked_at, expires_at)
        VALUES ($1, $2, $3, $4, 'STARTED', $5, now(), now() - interval '1 second')
        """,
        SCOPE,
        ALICE,
        live,
        request_fingerprint(req()),
        uuid.uuid4(),
    )
    await database.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
        "WHERE key = ANY($1::text[])",
        [done, failed],
    )

    # An expired key behaves as new: the handler runs again, and a new window starts.
    assert handler.calls == 2
    await run(store, req(), handler, done)
    assert handler.calls == 3
    await database.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1",
        done,
    )

    assert await store.purge_expired(batch=1) == 2  # done + failed, one per batch
    remaining = await database.fetch("SELECT key FROM idempotency_keys ORDER BY key")
    assert sorted(r["key"] for r in remaining) == sorted([live, fresh])
    assert await store.purge_expired() == 0


# -- holders in other processes: death, slowness, fencing -------------------------------------

HOLDER = Path(__file__).with_name("idempotency_holder.py")


async def _start_holder(
    postgres_url: str, schema: str, key: str, work_s: float, lock_s: float
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HOLDER),
        postgres_url,
        schema,
        key,
        str(work_s),
        str(lock_s),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"claimed\n"
    return proc


async def _until_done(
    store: IdempotencyStore, key: str, handler: CountingHandler | None = None
) -> tuple[bytes, int]:
    """Retry like a client (sleeping the RetryInfo delay) until the call completes; return the
    response and how many ABORTED answers came first."""
    aborted = 0
    while True:
        try:
            response = await store.run(
                req(), handler or CountingHandler(), key=key, scope=SCOPE, principal=ALICE
            )
            return response, aborted
        except Aborted as exc:
            aborted += 1
            await asyncio.sleep(exc.retry_after or 0.5)


async def test_a_killed_holders_key_is_taken_over_within_the_lock_timeout(
    postgres_url: str, database: Database, db_schema: str
) -> None:
    lock_s = 3.0
    store = IdempotencyStore(database, domain=DOMAIN, lock_timeout=lock_s)
    key = new_key()
    holder = await _start_holder(postgres_url, db_schema, key, work_s=60, lock_s=lock_s)
    await asyncio.sleep(1.5)  # a heartbeat or so in: the holder is alive and working
    with pytest.raises(Aborted):
        await run(store, req(), CountingHandler(), key)
    holder.kill()  # SIGKILL: no cleanup, the heartbeat just stops
    await holder.wait()
    killed_at = time.monotonic()
    response, aborted = await _until_done(store, key)
    recovered_s = time.monotonic() - killed_at
    print(f"takeover after kill -9: {recovered_s:.2f} s (lock {lock_s} s, {aborted} ABORTED)")
    assert wrappers_pb2.StringValue.FromString(response).value == "response-1"
    # The bound: the lock timeout after the last heartbeat, plus one retry delay.
    assert recovered_s <= lock_s + store.heartbeat_interval + 0.5, recovered_s
    assert aborted >= 1
    assert await row_state(database, key) == "COMPLETED"


async def test_a_slow_holder_in_another_process_is_never_taken_over(
    postgres_url: str, database: Database, db_schema: str
) -> None:
    lock_s = 1.5  # the holder works for three lock periods
    store = IdempotencyStore(database, domain=DOMAIN, lock_timeout=lock_s)
    key = new_key()
    holder = await _start_holder(postgres_url, db_schema, key, work_s=4.5, lock_s=lock_s)
    handler = CountingHandler()
    response, aborted = await _until_done(store, key, handler)
    assert handler.calls == 0 and aborted >= 3  # waited for the holder, never ran itself
    assert wrappers_pb2.StringValue.FromString(response).value == "done by the holder"
    assert holder.stdout is not None
    assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"done by the holder\n"
    assert await holder.wait() == 0


async def test_a_holder_that_lost_its_lock_stops_and_answers_aborted(
    database: Database,
) -> None:
    store = IdempotencyStore(database, domain=DOMAIN, lock_timeout=1.5)
    handler = CountingHandler(delay=10)
    key = new_key()
    running = asyncio.create_task(run(store, req(), handler, key))
    await asyncio.sleep(0.3)
    # Another caller took the key over (as if this holder had been silent too long).
    await database.execute(
        "UPDATE idempotency_keys SET lock_token = $2, locked_at = now() WHERE key = $1",
        key,
        uuid.uuid4(),
    )
    with pytest.raises(Aborted) as info:
        await asyncio.wait_for(running, 3)
    assert info.value.reason == "IDEMPOTENCY_LOCK_LOST" and info.value.retry_after
    assert handler.calls == 1  # started once, then stopped: no second writer beside the new one
