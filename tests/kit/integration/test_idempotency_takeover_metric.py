"""`idempotency_lock_takeovers_total{reason}`: a dead holder's key (lock) and an expired row
(expired) are counted apart; a fresh key and a replay are not takeovers."""

from __future__ import annotations

import uuid

from google.protobuf import wrappers_pb2
from prometheus_client import CollectorRegistry

from meshkit.db import Database
from meshkit.idempotency import IdempotencyStore, request_fingerprint

DOMAIN = "test.tickettoken.dev"
SCOPE = "/tickettoken.payment.v1.PaymentService/CreatePayment"
ALICE = "user-alice"
REQUEST = wrappers_pb2.StringValue(value="charge 100 EUR")


async def _handler() -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value="done")


def _takeovers(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("idempotency_lock_takeovers_total", {"reason": reason})
    assert value is not None, "the reasons are pre-set, so rate() sees them from the start"
    return value


async def _stage(database: Database, key: str, *, locked_ago_s: int, expires_in_s: int) -> None:
    await database.execute(
        """
        INSERT INTO idempotency_keys
            (scope, principal, key, fingerprint, state, lock_token, locked_at, created_at,
             expires_at)
        VALUES ($1, $2, $3, $4, 'STARTED', $5, now() - make_interval(secs => $6),
                now() - interval '1 hour', now() + make_interval(secs => $7))
        """,
        SCOPE,
        ALICE,
        key,
        request_fingerprint(REQUEST),
        uuid.uuid4(),
        locked_ago_s,
        expires_in_s,
    )


async def test_takeovers_are_counted_by_reason(database: Database) -> None:
    registry = CollectorRegistry()
    store = IdempotencyStore(database, domain=DOMAIN, lock_timeout=5.0, registry=registry)

    async def run(key: str) -> bytes:
        return await store.run(REQUEST, _handler, key=key, scope=SCOPE, principal=ALICE)

    fresh = str(uuid.uuid4())
    await run(fresh)
    await run(fresh)  # a replay
    assert (_takeovers(registry, "lock"), _takeovers(registry, "expired")) == (0, 0)

    dead = str(uuid.uuid4())
    await _stage(database, dead, locked_ago_s=60, expires_in_s=86400)  # holder gone for 60 s
    await run(dead)
    assert (_takeovers(registry, "lock"), _takeovers(registry, "expired")) == (1, 0)

    expired = str(uuid.uuid4())
    await _stage(database, expired, locked_ago_s=60, expires_in_s=-10)
    await run(expired)
    assert (_takeovers(registry, "lock"), _takeovers(registry, "expired")) == (1, 1)
