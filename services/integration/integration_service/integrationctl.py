"""Operator CLI for the credential vault.

    python -m integration_service.integrationctl rotate-keys

Re-wraps every stored credential's data key under the active key-encryption key version
(INTEGRATION_KEK_ACTIVE), online: the service keeps reading credentials meanwhile (every replica
must already have the new version configured, with the old one still listed). Reads the same
environment as the service (DATABASE_URL, DB_SCHEMA, REDIS_URL for the `kms` guard, the
INTEGRATION_KEK_* and INTEGRATION_KMS_* settings). Prints one JSON line: the active version,
how many were re-wrapped, already current, and remaining (0 when complete: the old version can
then be removed from the settings, and its KMS key disabled and scheduled for deletion).
Exit status 1 while anything remains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from prometheus_client import CollectorRegistry

from integration_service.app import build_keys
from integration_service.domain.model import Actor
from integration_service.settings import IntegrationSettings
from integration_service.usecases.rotation import RotationCases
from integration_service.usecases.vault import Vault
from meshkit.db import Database
from meshkit.resilience import Guards, GuardSettings, connect_guard_redis, load_policies
from meshkit.settings import SettingsError, load_settings


async def _rotate(settings: IntegrationSettings) -> int:
    guard_settings = GuardSettings(
        expected_replicas=1,
        key_prefix=settings.guard_key_prefix,
        policies=load_policies(settings.provider_policies),
    )
    redis = connect_guard_redis(settings.redis_url.get_secret_value(), guard_settings)
    guards = Guards(redis, CollectorRegistry(), guard_settings)
    db = await Database.connect(
        settings.database_url.get_secret_value(), schema=settings.schema_name, max_size=2
    )
    try:
        cases = RotationCases(db, Vault(build_keys(settings, guards)))
        done = await cases.rotate(Actor("operator:integrationctl"))
    finally:
        await db.close()
        await guards.aclose()
    sys.stdout.write(
        json.dumps(
            {
                "kek_version": done.kek_version,
                "rewrapped": done.rewrapped,
                "already_current": done.already_current,
                "remaining": done.remaining,
            }
        )
        + "\n"
    )
    return 1 if done.remaining else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration_service.integrationctl")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("rotate-keys", help="re-wrap every data key under the active KEK version")
    parser.parse_args(argv)
    try:
        settings = load_settings(IntegrationSettings)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    return asyncio.run(_rotate(settings))


if __name__ == "__main__":
    raise SystemExit(main())
