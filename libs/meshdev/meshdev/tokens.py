"""`make tokens` / `python -m meshdev.tokens`: dev JWTs for grpcurl, signed with the dev key.

Dev mode only: the key pair lives under DEV_DIR (default `.dev`) and is refused in production.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from meshkit.auth import TokenMinter, ensure_dev_keys, load_private_key
from meshkit.settings import DEV_ISSUER

AUDIENCES = ("payment", "nft", "notify", "integration")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshdev.tokens")
    parser.add_argument("--dev-dir", type=Path, default=Path(os.environ.get("DEV_DIR", ".dev")))
    parser.add_argument("--sub", default=None, help="subject (default dev-<role>)")
    parser.add_argument("--role", action="append", help="buyer | venue_admin | admin")
    parser.add_argument("--service", help="mint a service token svc:<name> instead of a user token")
    parser.add_argument("--aud", help="audience, e.g. tickettoken.payment (default: all four)")
    parser.add_argument("--ttl", type=int, default=3600)
    parser.add_argument("--venue", action="append", default=[], help="venue ids (venue_admin)")
    args = parser.parse_args(argv)
    keys = ensure_dev_keys(args.dev_dir)
    minter = TokenMinter(load_private_key(keys.private_key_path), kid=keys.kid, issuer=DEV_ISSUER)
    roles = args.role or ["admin"]
    subject = f"svc:{args.service}" if args.service else (args.sub or f"dev-{roles[0]}")
    audiences = [args.aud] if args.aud else [f"tickettoken.{a}" for a in AUDIENCES]
    for aud in audiences:
        token = minter.mint(
            subject=subject,
            audience=aud,
            ttl=args.ttl,
            roles=[] if args.service else roles,
            extra={"venue_ids": args.venue} if args.venue else None,
        )
        sys.stdout.write((token if args.aud else f"{aud}\t{token}") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
