"""Operator CLI for mints that did not make it: list them, put them back in the queue.

    python -m nft_service.mintctl list [--limit N]
    python -m nft_service.mintctl requeue --payment PAYMENT_ID [...]   # or --all

Uses DATABASE_URL (and DB_SCHEMA, default nft) like the service. A re-queued ticket starts
again with attempts reset; its first step is to read the chain (its mint address never changes),
so a mint that landed unseen is recorded, never sent twice. The same admin retry is available
over gRPC: MintTickets for the payment with a new idempotency key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from meshkit.db import cli_database
from nft_service.usecases.minting import failed_mints, requeue_failed


async def _main(args: argparse.Namespace) -> int:
    async with cli_database(args.schema) as db:
        if args.command == "list":
            for ticket in await failed_mints(db, args.limit):
                sys.stdout.write(
                    json.dumps(
                        {
                            "ticket_id": ticket.ticket_id,
                            "payment_id": ticket.payment_id,
                            "state": ticket.mint_state.value,
                            "attempts": ticket.attempts,
                            "error_code": ticket.error_code,
                            "error_message": ticket.error_message,
                            "updated_at": str(ticket.updated_at),
                        }
                    )
                    + "\n"
                )
            return 0
        if not args.all and not args.payment:
            sys.stderr.write("name --payment PAYMENT_ID (repeatable) or --all\n")
            return 2
        count = await requeue_failed(db, None if args.all else args.payment)
        sys.stdout.write(f"requeued {count}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nft_service.mintctl")
    parser.add_argument("--schema", default=os.environ.get("DB_SCHEMA", "nft"))
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="FAILED and DEAD_LETTERED tickets, newest first")
    listing.add_argument("--limit", type=int, default=100)
    requeue = sub.add_parser("requeue", help="put failed tickets back in the queue")
    requeue.add_argument("--payment", action="append", default=[])
    requeue.add_argument("--all", action="store_true")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
