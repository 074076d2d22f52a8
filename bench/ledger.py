"""Benchmark: balanced journal transactions through payment's ledger code vs bare asyncpg inserts.

A ticket sale is one journal transaction (buyer's money at Stripe → venue payable, platform fee,
gas reserve, tax payable), posted in its own database transaction by `store.ledger.post`, the
code every capture goes through (one statement: the journal row and its entries, refused when
the provider object was already posted). The baseline inserts the same rows with plain asyncpg
(the journal row, then the entries in one INSERT) in the same run, against the same database.

16 concurrent writers, on an embedded PostgreSQL with durable commits (fsync and synchronous
commit on, as a production server runs), in three timed phases after a warm-up:

* `ours`  — sales spread over 1,000 venues, a quarter of them to 3 hot venues;
* `bare`  — the same mix through the bare inserts;
* `hot`   — every writer selling for one venue: balances are derived from entries, never stored
  in a row per venue, so a hot venue must not serialize its writers.

Then every journal transaction is checked to sum to zero.

Last line: `ledger: tx_per_s=<n> ratio=<x> hot_venue_tx_per_s=<n> unbalanced=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from meshdev.embedded import EmbeddedPostgres
from meshkit.db import Database
from meshkit.migrations import KIT_MIGRATIONS, migrate
from payment_service.app import DEFINITION
from payment_service.domain.ledger import Posting, Split, charge_posting
from payment_service.store import ledger

WRITERS = 16
SECONDS = 5.0
WARMUP = 1.0
VENUES = [f"venue-{i:04d}" for i in range(1000)]
HOT = ["venue-hot-1", "venue-hot-2", "venue-hot-3"]
SCHEMA = "ledgerbench"
SPLIT = Split(venue=10_000, platform=820, gas=50, tax=925)


def sale(venue_id: str) -> tuple[Posting, uuid.UUID]:
    posting = charge_posting(
        object_id=f"pi_{uuid.uuid4().hex}",
        currency="USD",
        venue_id=venue_id,
        split=SPLIT,
        available_at=datetime.now(UTC) + timedelta(days=7),
    )
    return posting, uuid.uuid4()


async def post_ours(db: Database, venue_id: str) -> None:
    posting, payment_id = sale(venue_id)
    async with db.transaction() as conn:
        posted = await ledger.post(
            conn, posting, cause="bench", payment_id=payment_id, venue_id=venue_id
        )
    assert posted


async def post_bare(db: Database, venue_id: str) -> None:
    posting, payment_id = sale(venue_id)
    txn_id = uuid.uuid4()
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO journal_transactions (id, kind, object_id, currency, payment_id, "
            "venue_id, cause) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            txn_id,
            posting.kind.value,
            posting.object_id,
            posting.currency,
            payment_id,
            venue_id,
            "bench",
        )
        # One statement for the entries: the database checks each statement's entries balance.
        await conn.execute(
            "INSERT INTO ledger_entries (txn_id, account, venue_id, currency, amount, "
            "available_at) SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], "
            "$5::bigint[], $6::timestamptz[])",
            txn_id,
            [e.account.value for e in posting.entries],
            [e.venue_id for e in posting.entries],
            [posting.currency] * len(posting.entries),
            [e.amount for e in posting.entries],
            [e.available_at for e in posting.entries],
        )


def mixed_venue(rng: random.Random) -> str:
    return rng.choice(HOT) if rng.random() < 0.25 else rng.choice(VENUES)


async def phase(
    db: Database,
    post: Callable[[Database, str], Awaitable[None]],
    pick: Callable[[random.Random], str],
    seconds: float,
) -> float:
    """Transactions per second over `seconds`, after a warm-up, from WRITERS writers."""
    counts = [0] * WRITERS
    measuring = False
    stop = False

    async def writer(i: int) -> None:
        rng = random.Random(i)
        while not stop:
            await post(db, pick(rng))
            if measuring:
                counts[i] += 1

    tasks = [asyncio.create_task(writer(i)) for i in range(WRITERS)]
    await asyncio.sleep(WARMUP)
    measuring = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    measuring = False
    stop = True
    await asyncio.gather(*tasks)
    return sum(counts) / elapsed


async def unbalanced(db: Database) -> int:
    async with db.acquire() as conn:
        value = await conn.fetchval(
            "SELECT count(*) FROM (SELECT txn_id FROM ledger_entries GROUP BY txn_id "
            "HAVING sum(amount) <> 0) AS off"
        )
    return int(value)


async def run(url: str, seconds: float) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.close()
    db = await Database.connect(url, schema=SCHEMA, min_size=WRITERS, max_size=WRITERS + 2)
    try:
        await migrate(db, SCHEMA, [KIT_MIGRATIONS, DEFINITION.migrations])
        ours = await phase(db, post_ours, mixed_venue, seconds)
        bare = await phase(db, post_bare, mixed_venue, seconds)
        hot = await phase(db, post_ours, lambda rng: HOT[0], seconds)
        off = await unbalanced(db)
        async with db.acquire() as c:
            total = await c.fetchval("SELECT count(*) FROM journal_transactions")
    finally:
        await db.close()
    print(f"writers: {WRITERS}, durable commits (fsync on), {seconds:g} s per phase")
    print(f"ours (1,000 venues + 3 hot): {ours:.0f} tx/s")
    print(f"bare asyncpg inserts, same rows: {bare:.0f} tx/s")
    print(f"one hot venue, all writers: {hot:.0f} tx/s ({hot / ours:.2f} x ours)")
    print(f"journal transactions checked: {total}, unbalanced: {off}")
    print(
        f"ledger: tx_per_s={ours:.0f} ratio={ours / bare:.3f} "
        f"hot_venue_tx_per_s={hot:.0f} unbalanced={off}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg", fsync=True)
        try:
            url = postgres.start()
            asyncio.run(run(url, args.seconds))
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
