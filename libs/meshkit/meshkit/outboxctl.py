"""Operator CLI for a service's outbox: list and replay dead letters, requeue stuck events.

    python -m meshkit.outboxctl --schema payment list
    python -m meshkit.outboxctl --schema payment replay [EVENT_ID ...]   # none = all
    python -m meshkit.outboxctl --schema payment requeue [--older-than 900] [--dry-run]

Uses DATABASE_URL like the services. Replayed events go back to the outbox with their attempts
reset and are delivered by the running relays with the same event id (= idempotency key), so a
replay can never apply an event twice downstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from meshkit.db import cli_database
from meshkit.outbox import list_dead_letters, replay_dead_letters, requeue_stuck


async def _main(args: argparse.Namespace) -> int:
    async with cli_database(args.schema) as db:
        if args.command == "list":
            for letter in await list_dead_letters(db, limit=args.limit):
                row = {
                    "id": str(letter.id),
                    "topic": letter.topic,
                    "attempts": letter.attempts,
                    "last_error": letter.last_error,
                    "dead_lettered_at": str(letter.dead_lettered_at),
                }
                sys.stdout.write(json.dumps(row) + "\n")
        elif args.command == "requeue":
            stuck = await requeue_stuck(
                db, older_than_s=args.older_than, limit=args.limit, dry_run=args.dry_run
            )
            for event_id in stuck:
                sys.stdout.write(f"{event_id}\n")
            verb = "would requeue" if args.dry_run else "requeued"
            sys.stdout.write(f"{verb} {len(stuck)}\n")
        else:
            ids = [uuid.UUID(i) for i in args.ids] or None
            count = await replay_dead_letters(db, ids)
            sys.stdout.write(f"replayed {count}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshkit.outboxctl")
    parser.add_argument("--schema", required=True, help="the service's schema, e.g. payment")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list")
    listing.add_argument("--limit", type=int, default=100)
    replay = sub.add_parser("replay")
    replay.add_argument("ids", nargs="*")
    requeue = sub.add_parser("requeue", help="make failed events stuck in backoff due now")
    requeue.add_argument("--older-than", type=float, default=900.0, help="seconds (default 900)")
    requeue.add_argument("--limit", type=int, default=1000)
    requeue.add_argument("--dry-run", action="store_true")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
