"""Schema migrations: ordered files, applied once, safe when several replicas start together.

A `MigrationSource` is a directory of `NNNN_description.sql` files and, for changes SQL cannot
express (e.g. rewriting rows whose bytes only our code can read), `NNNN_description.py` files
that define `async def migrate(conn: asyncpg.Connection) -> None`. `migrate()` applies the files
that are not yet recorded in `<schema>.schema_migrations`, in order (sources in the order given,
the kit's own `KIT_MIGRATIONS` first, then files by version), each in its own transaction
together with its record, so a crash leaves either both or neither. Every replica of a service
runs `migrate()` at start-up: a session advisory lock keyed on the schema makes them take turns,
and the ones that come second find nothing left to do.

An applied file must never change (its checksum is compared on every run); fix forward with a new
file instead. Statements that refuse to run inside a transaction (`CREATE INDEX CONCURRENTLY`)
are therefore not supported in migration files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from meshkit.db import Database, create_schema, quote_ident, validate_schema_name

__all__ = [
    "KIT_MIGRATIONS",
    "Migration",
    "MigrationError",
    "MigrationSource",
    "advisory_lock_key",
    "migrate",
]

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(?P<version>\d{4,})_(?P<name>[A-Za-z0-9_]+)\.(?P<kind>sql|py)$")


class MigrationError(RuntimeError):
    """The migration files or the recorded history are inconsistent; nothing more was applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One file of a source: SQL, or Python with an `async def migrate(conn)`."""

    source: str
    version: int
    name: str
    path: Path
    sql: str
    """The file's text (SQL, or the Python source)."""
    checksum: str
    kind: str = "sql"

    async def apply(self, conn: asyncpg.Connection, statement_timeout: float) -> None:
        """Run the migration on `conn` (inside the caller's transaction)."""
        if self.kind == "sql":
            await conn.execute(self.sql, timeout=statement_timeout)
            return
        await conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout * 1000)}")
        await _python_step(self)(conn)


def _python_step(m: Migration) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    spec = importlib.util.spec_from_file_location(
        f"_meshkit_migration_{m.source}_{m.version:04d}", m.path
    )
    if spec is None or spec.loader is None:
        raise MigrationError(f"{m.path}: cannot load")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    step = getattr(module, "migrate", None)
    if step is None:
        raise MigrationError(f"{m.path}: defines no `async def migrate(conn)`")
    return step  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class MigrationSource:
    """A named directory of `NNNN_description.sql|py` files (e.g. `kit`, `payment`)."""

    name: str
    directory: Path

    def migrations(self) -> list[Migration]:
        """The source's files in version order; malformed names and duplicate versions fail."""
        if not self.directory.is_dir():
            raise MigrationError(f"migration directory {self.directory} does not exist")
        found: dict[int, Migration] = {}
        for path in sorted([*self.directory.glob("*.sql"), *self.directory.glob("*.py")]):
            if path.name == "__init__.py":
                continue
            match = _FILE_RE.match(path.name)
            if match is None:
                # A typo in a name must not make a migration silently never run.
                raise MigrationError(
                    f"{path}: migration files must be named NNNN_description.sql or .py"
                )
            version = int(match["version"])
            if version in found:
                raise MigrationError(
                    f"{self.name}: version {version} used twice "
                    f"({found[version].path.name}, {path.name})"
                )
            raw = path.read_bytes()
            found[version] = Migration(
                source=self.name,
                version=version,
                name=match["name"],
                path=path,
                sql=raw.decode("utf-8"),
                checksum=hashlib.sha256(raw).hexdigest(),
                kind=match["kind"],
            )
        return [found[v] for v in sorted(found)]


KIT_MIGRATIONS = MigrationSource("kit", Path(__file__).with_name("migrations"))
"""The kit's own tables (idempotency keys, outbox, dead letters); list it first."""


def advisory_lock_key(schema: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock`, derived from the schema name."""
    digest = hashlib.sha256(f"meshkit.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def _connection(
    target: str | Database, connect_timeout: float
) -> AsyncIterator[asyncpg.Connection]:
    # One dedicated connection for the whole run: a session advisory lock belongs to the session
    # that took it, so lock, migrations and unlock must all use the same one.
    if isinstance(target, Database):
        async with target.acquire() as conn:
            yield conn
        return
    conn = await asyncpg.connect(target, timeout=connect_timeout)
    try:
        yield conn
    finally:
        await conn.close()


async def migrate(
    target: str | Database,
    schema: str,
    sources: Sequence[MigrationSource],
    *,
    lock_timeout: float = 300.0,
    statement_timeout: float = 600.0,
    connect_timeout: float = 10.0,
) -> list[tuple[str, int]]:
    """Apply every pending migration of `sources` to `schema`; return the (source, version) list.

    `target` is a database URL or a `Database` (one of its connections is borrowed). Waits up to
    `lock_timeout` seconds for another process migrating the same schema.
    """
    validate_schema_name(schema)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise MigrationError(f"duplicate migration source names: {names}")
    planned = [m for source in sources for m in source.migrations()]
    table = f"{quote_ident(schema)}.schema_migrations"
    key = advisory_lock_key(schema)
    applied: list[tuple[str, int]] = []

    async with _connection(target, connect_timeout) as conn:
        waited = time.monotonic()
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", key, timeout=lock_timeout)
        except TimeoutError as exc:
            raise MigrationError(
                f"another process held the migration lock of schema {schema!r} "
                f"for more than {lock_timeout:.0f}s"
            ) from exc
        try:
            logger.debug(
                "migration lock acquired",
                extra={"schema": schema, "waited_s": round(time.monotonic() - waited, 3)},
            )
            await create_schema(conn, schema)
            await conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {table} (
                    source     text        NOT NULL,
                    version    integer     NOT NULL,
                    name       text        NOT NULL,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (source, version)
                )
                """
            )
            rows = await conn.fetch(f"SELECT source, version, checksum FROM {table}")
            done = {(r["source"], r["version"]): r["checksum"] for r in rows}

            # Check everything before changing anything: a tampered history stops the start-up.
            for m in planned:
                recorded = done.get((m.source, m.version))
                if recorded is not None and recorded != m.checksum:
                    raise MigrationError(
                        f"{m.source}/{m.path.name} changed after it was applied to schema "
                        f"{schema!r} (checksum {recorded[:12]}… → {m.checksum[:12]}…); "
                        "add a new migration instead of editing an applied one"
                    )
            known = {(m.source, m.version) for m in planned}
            for source, version in sorted(set(done) - known):
                if source in names:
                    logger.warning(
                        "applied migration has no file",
                        extra={"schema": schema, "source": source, "version": version},
                    )

            for m in planned:
                if (m.source, m.version) in done:
                    continue
                started = time.monotonic()
                async with conn.transaction():
                    # The file's unqualified names must land in this schema whatever the
                    # connection's own search_path is.
                    await conn.execute("SELECT set_config('search_path', $1, true)", schema)
                    try:
                        await m.apply(conn, statement_timeout)
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(
                            f"{m.source}/{m.path.name} failed on schema {schema!r}: {exc}"
                        ) from exc
                    await conn.execute(
                        f"INSERT INTO {table} (source, version, name, checksum) "
                        "VALUES ($1, $2, $3, $4)",
                        m.source,
                        m.version,
                        m.name,
                        m.checksum,
                    )
                applied.append((m.source, m.version))
                logger.info(
                    "migration applied",
                    extra={
                        "schema": schema,
                        "source": m.source,
                        "version": m.version,
                        "migration": m.name,
                        "seconds": round(time.monotonic() - started, 3),
                    },
                )
        finally:
            # Also released if the connection dies, but a pooled connection lives on. A failure
            # here must not hide the error that got us into `finally`.
            try:
                if not conn.is_closed():
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                logger.warning(
                    "could not release the migration lock; closing its connection",
                    extra={"schema": schema, "error": repr(exc)},
                )
                # Pooled connections are not reset on release (meshkit.db.PooledConnection):
                # a session lock must never go back to the pool.
                conn.terminate()
    return applied
