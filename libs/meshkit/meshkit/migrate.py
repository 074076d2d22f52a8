"""`python -m meshkit.migrate <service>`: apply a service's migrations, then exit.

    python -m meshkit.migrate payment_service        # or nft_service, notify_service, ...

The Kubernetes migration Job runs this (deploy/k8s/base/<svc>/migrate-job.yaml) with a
DDL-capable `DATABASE_URL` (the schema owner), so the services themselves run with
`MIGRATE_ON_START=false` and a role that may only read and write rows (deploy/README.md,
"Migrations and database roles"). It applies the kit's migrations and the service's own, in
order, under the schema's advisory lock, exactly as a service does at start (meshkit.migrations):
running it twice, or beside a service that migrates on start, is safe.

Reads only what it needs: `DATABASE_URL` (required), `DB_SCHEMA` (default: the service name),
`MIGRATE_LOCK_TIMEOUT_S`, `LOG_LEVEL`. Exits 0 when the schema is up to date, 1 when a
migration fails (the error names the file), 2 on bad arguments or settings.

`pending_migrations` is what a service started with `MIGRATE_ON_START=false` checks: it waits
for the Job rather than serve on an old schema.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshkit.db import Database, quote_ident
from meshkit.logs import configure_logging
from meshkit.migrations import KIT_MIGRATIONS, MigrationError, MigrationSource, migrate

__all__ = ["MigrateSettings", "main", "pending_migrations", "service_sources"]

_log = logging.getLogger("meshkit.migrate")


class MigrateSettings(BaseSettings):
    """The few settings the migration Job reads (environment variable = field name)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    database_url: SecretStr = Field(description="PostgreSQL URL of a role that may run DDL.")
    db_schema: str | None = Field(None, description="Schema; default the service name.")
    migrate_lock_timeout_s: float = Field(
        300.0, description="How long to wait for another process migrating the same schema."
    )
    log_level: str = Field("INFO", description="Log level.")


def service_sources(module: str) -> tuple[str, list[MigrationSource]]:
    """(service name, migration sources) of `module` (`payment_service`, or any module with a
    `DEFINITION`, or whose `.app` has one)."""
    imported = importlib.import_module(module)
    definition = getattr(imported, "DEFINITION", None)
    if definition is None:
        definition = importlib.import_module(f"{module}.app").DEFINITION
    return definition.settings_cls.service_name, [KIT_MIGRATIONS, definition.migrations]


async def pending_migrations(
    db: Database, schema: str, sources: Sequence[MigrationSource]
) -> list[str]:
    """`source/file` of every migration of `sources` not yet recorded in `schema` (all of them
    when the schema has never been migrated). Only reads: fine for a DML-only role."""
    planned = [m for source in sources for m in source.migrations()]
    table = f"{quote_ident(schema)}.schema_migrations"
    (found,) = await db.fetch("SELECT to_regclass($1) IS NOT NULL AS exists", table)
    done: set[tuple[str, int]] = set()
    if found["exists"]:
        rows = await db.fetch(f"SELECT source, version FROM {table}")
        done = {(r["source"], r["version"]) for r in rows}
    return [f"{m.source}/{m.path.name}" for m in planned if (m.source, m.version) not in done]


async def _run(settings: MigrateSettings, module: str) -> int:
    name, sources = service_sources(module)
    schema = settings.db_schema or name
    applied = await migrate(
        settings.database_url.get_secret_value(),
        schema,
        sources,
        lock_timeout=settings.migrate_lock_timeout_s,
    )
    _log.info(
        "schema up to date",
        extra={"schema": schema, "applied": [f"{s}/{v}" for s, v in applied]},
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshkit.migrate", description=__doc__)
    parser.add_argument("service", help="service module, e.g. payment_service")
    args = parser.parse_args(argv)
    try:
        settings = MigrateSettings()  # from the environment
    except ValidationError as exc:
        configure_logging("migrate")
        _log.error("invalid settings", extra={"error": str(exc)})
        return 2
    configure_logging(f"{args.service.removesuffix('_service')}-migrate", settings.log_level)
    try:
        return asyncio.run(_run(settings, args.service))
    except (MigrationError, OSError) as exc:
        _log.error("migration failed", extra={"error": str(exc)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
