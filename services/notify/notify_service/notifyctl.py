"""Operator CLI for notifications that did not make it: list them, put them back in the queue.

    python -m notify_service.notifyctl list [--limit N] [--include-failed]
    python -m notify_service.notifyctl retry ID [ID ...]      # or --all [--include-failed]

Uses DATABASE_URL (and DB_SCHEMA, default notify) like the service. `list` prints one JSON
object per line (destinations masked). A retried notification starts again with attempts reset
and the same id and Message-ID; consent (suppressions, preferences, quiet hours) is checked
again before it is sent. Dead letters are what retries could not fix (every provider failing
for NOTIFY_MAX_ATTEMPTS rounds, or refusing our credentials); FAILED ones were refused for the
message itself and are retried only when asked (`--include-failed`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid

from meshkit.db import cli_database
from notify_service.usecases import operators


async def _main(args: argparse.Namespace) -> int:
    async with cli_database(args.schema) as db:
        if args.command == "list":
            for n in await operators.stuck(db, args.limit, include_failed=args.include_failed):
                row = {
                    "id": str(n.id),
                    "status": n.status.value,
                    "channel": n.channel.value,
                    "destination": n.destination_masked,
                    "template_id": n.template.template_id if n.template else "",
                    "provider": n.provider,
                    "attempts": n.attempts,
                    "error_code": n.error_code,
                    "error_message": n.error_message,
                    "updated_at": n.updated_at.isoformat(),
                }
                sys.stdout.write(json.dumps(row) + "\n")
            return 0
        if not args.all and not args.ids:
            sys.stderr.write("name notification ids, or --all\n")
            return 2
        try:
            ids = None if args.all else [uuid.UUID(i) for i in args.ids]
        except ValueError:
            sys.stderr.write("notification ids are UUIDs\n")
            return 2
        retried = await operators.retry(db, ids, include_failed=args.include_failed)
        for notification_id in retried:
            sys.stdout.write(f"{notification_id}\n")
        sys.stderr.write(f"requeued {len(retried)}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notify_service.notifyctl")
    parser.add_argument("--schema", default=os.environ.get("DB_SCHEMA", "notify"))
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="dead-lettered notifications, newest first")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--include-failed", action="store_true")
    retry = sub.add_parser("retry", help="put notifications back in the queue")
    retry.add_argument("ids", nargs="*")
    retry.add_argument("--all", action="store_true")
    retry.add_argument("--include-failed", action="store_true")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
