"""Admin CLI for venues' tax setup (the contract has no RPC for it).

    python -m payment_service.venues upsert VENUE_ID --country US --region TN \\
        --locality Nashville [--postal-code 37203] [--entertainment-tax]
    python -m payment_service.venues show VENUE_ID

Reads DATABASE_URL and DB_SCHEMA (default "payment") like the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from meshkit.db import cli_database
from payment_service.domain.fees import Jurisdiction, tax_rates
from payment_service.store import venues


async def _main(args: argparse.Namespace) -> int:
    async with cli_database(os.environ.get("DB_SCHEMA", "payment")) as db, db.acquire() as conn:
        if args.command == "upsert":
            await venues.upsert(
                conn,
                args.venue_id,
                Jurisdiction(
                    country_code=args.country,
                    region_code=args.region,
                    locality=args.locality,
                    postal_code=args.postal_code,
                    entertainment_tax_applies=args.entertainment_tax,
                ),
            )
        venue = await venues.get(conn, args.venue_id)
    if venue is None:
        sys.stderr.write(f"venue {args.venue_id} is not configured\n")
        return 1
    rates = tax_rates(venue)
    sys.stdout.write(
        json.dumps(
            {
                "venue_id": args.venue_id,
                "country_code": venue.country_code,
                "region_code": venue.region_code,
                "locality": venue.locality,
                "postal_code": venue.postal_code,
                "entertainment_tax": venue.entertainment_tax_applies,
                "rates_bps": {
                    "state": rates.state_bps,
                    "local": rates.local_bps,
                    "special": rates.special_bps,
                },
            }
        )
        + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m payment_service.venues")
    sub = parser.add_subparsers(dest="command", required=True)
    upsert = sub.add_parser("upsert", help="create or update a venue's jurisdiction")
    upsert.add_argument("venue_id")
    upsert.add_argument("--country", required=True)
    upsert.add_argument("--region", default="")
    upsert.add_argument("--locality", default="")
    upsert.add_argument("--postal-code", default="")
    upsert.add_argument("--entertainment-tax", action="store_true")
    show = sub.add_parser("show", help="print a venue's jurisdiction and tax rates")
    show.add_argument("venue_id")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
