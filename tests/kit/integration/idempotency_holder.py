"""Helper process for test_idempotency_store: claims one idempotency key and works on it.

Usage: python idempotency_holder.py <database url> <schema> <key> <work seconds> <lock s>

It prints `claimed` once its handler runs (the key is STARTED, heart-beating), works for the given
seconds (an await, like a slow provider call), then prints the stored response's text and exits.
Killed with SIGKILL, it leaves a STARTED key whose heartbeat simply stops.
"""

from __future__ import annotations

import asyncio
import sys

from google.protobuf import wrappers_pb2

from meshkit.db import Database
from meshkit.idempotency import IdempotencyStore


async def main(url: str, schema: str, key: str, work_s: str, lock_s: str) -> None:
    db = await Database.connect(url, schema=schema, min_size=1, max_size=2)
    store = IdempotencyStore(db, domain="tickettoken.test", lock_timeout=float(lock_s))

    async def handler() -> wrappers_pb2.StringValue:
        sys.stdout.write("claimed\n")
        sys.stdout.flush()
        await asyncio.sleep(float(work_s))
        return wrappers_pb2.StringValue(value="done by the holder")

    response = await store.run(
        wrappers_pb2.StringValue(value="charge 100 EUR"),
        handler,
        key=key,
        scope="/tickettoken.payment.v1.PaymentService/CreatePayment",
        principal="user-alice",
    )
    sys.stdout.write(wrappers_pb2.StringValue.FromString(response).value + "\n")
    await db.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
