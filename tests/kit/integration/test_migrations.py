"""Migration runner: concurrent replicas apply each file exactly once; history is tamper-proof."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import asyncpg
import pytest

from meshkit.db import Database
from meshkit.migrations import KIT_MIGRATIONS, MigrationError, MigrationSource, migrate

WORKER = Path(__file__).with_name("migrate_worker.py")

# Plain CREATE TABLE / INSERT into a primary key: running any file twice fails loudly.
# The sleep keeps the first process inside the lock while the others arrive.
TEST_MIGRATIONS = {
    "0001_widgets.sql": "CREATE TABLE widgets (id int PRIMARY KEY);\nSELECT pg_sleep(0.5);\n",
    "0002_gadgets.sql": "CREATE TABLE gadgets (id int PRIMARY KEY);\n",
    "0003_seed.sql": "INSERT INTO widgets VALUES (1);\nINSERT INTO gadgets VALUES (1);\n",
}


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_three_processes_apply_each_migration_exactly_once(
    postgres_url: str, db_schema: str, tmp_path: Path
) -> None:
    migrations = _write(tmp_path / "test_migrations", TEST_MIGRATIONS)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            postgres_url,
            db_schema,
            str(migrations),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    # Release all three at once, after their imports.
    for proc in procs:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate(b"go\n") for p in procs)), 60)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    applied = [tuple(item) for out, _ in outputs for item in json.loads(out)]

    expected = {("kit", 1), ("test", 1), ("test", 2), ("test", 3)}
    # Every migration applied by exactly one of the three processes.
    assert sorted(applied) == sorted(expected)

    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            f"SELECT source, version, count(*) OVER () AS n FROM {db_schema}.schema_migrations"
        )
        assert {(r["source"], r["version"]) for r in rows} == expected
        assert rows[0]["n"] == 4
        assert await conn.fetchval(f"SELECT count(*) FROM {db_schema}.widgets") == 1
        # The kit's tables landed in the service's schema.
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", db_schema
        )
        assert {r["tablename"] for r in tables} >= {
            "idempotency_keys",
            "outbox",
            "outbox_dead_letters",
            "schema_migrations",
        }
    finally:
        await conn.close()


async def test_changed_checksum_is_refused_and_new_files_are_applied(
    postgres_url: str, db_schema: str, tmp_path: Path
) -> None:
    directory = _write(tmp_path / "m", {"0001_first.sql": "CREATE TABLE first (id int);\n"})
    sources = [KIT_MIGRATIONS, MigrationSource("svc", directory)]
    db = await Database.connect(postgres_url, schema=db_schema)
    try:
        assert await migrate(db, db_schema, sources) == [("kit", 1), ("svc", 1)]
        assert await migrate(db, db_schema, sources) == []

        _write(directory, {"0002_second.sql": "CREATE TABLE second (id int);\n"})
        assert await migrate(db, db_schema, sources) == [("svc", 2)]

        (directory / "0001_first.sql").write_text("CREATE TABLE first (id bigint);\n")
        _write(directory, {"0003_third.sql": "CREATE TABLE third (id int);\n"})
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(db, db_schema, sources)
        # Refused before anything else ran.
        versions = await db.fetch("SELECT version FROM schema_migrations WHERE source = 'svc'")
        assert sorted(r["version"] for r in versions) == [1, 2]

        # The advisory lock was released on the error path: another run gets it at once.
        (directory / "0001_first.sql").write_text("CREATE TABLE first (id int);\n")
        assert await migrate(db, db_schema, sources, lock_timeout=2) == [("svc", 3)]
    finally:
        await db.close()


async def test_failing_migration_rolls_back_with_its_record(
    postgres_url: str, db_schema: str, tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "0001_ok.sql": "CREATE TABLE ok (id int);\n",
            "0002_bad.sql": "CREATE TABLE half (id int);\nSELECT * FROM missing_table;\n",
        },
    )
    with pytest.raises(MigrationError, match=r"0002_bad\.sql"):
        await migrate(postgres_url, db_schema, [MigrationSource("svc", directory)])
    conn = await asyncpg.connect(postgres_url)
    try:
        recorded = await conn.fetch(f"SELECT version FROM {db_schema}.schema_migrations")
        assert [r["version"] for r in recorded] == [1]
        assert await conn.fetchval("SELECT to_regclass($1)", f"{db_schema}.half") is None
    finally:
        await conn.close()


def test_malformed_file_names_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"1_too_short.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="NNNN_description"):
        MigrationSource("svc", tmp_path).migrations()


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match="used twice"):
        MigrationSource("svc", tmp_path).migrations()


async def test_python_migrations_rewrite_rows_in_order_with_the_sql_ones(
    postgres_url: str, db_schema: str, tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "0001_table.sql": "CREATE TABLE t (id int PRIMARY KEY, blob bytea, doc jsonb);\n"
            "INSERT INTO t (id, blob) VALUES (1, 'a=1'), (2, 'b=2');\n",
            # Rows whose bytes only code can read: a Python step, in the same transaction as
            # its record (unqualified names resolve to the service's schema).
            "0002_decode.py": (
                '"""Decode blob into doc."""\n'
                "import json\n\n\n"
                "async def migrate(conn):\n"
                "    for row in await conn.fetch('SELECT id, blob FROM t'):\n"
                "        key, _, value = bytes(row['blob']).decode().partition('=')\n"
                "        await conn.execute(\n"
                "            'UPDATE t SET doc = $2::jsonb WHERE id = $1',\n"
                "            row['id'], json.dumps({key: int(value)}))\n"
            ),
            "0003_drop.sql": "ALTER TABLE t DROP COLUMN blob;\n",
        },
    )
    applied = await migrate(postgres_url, db_schema, [MigrationSource("svc", directory)])
    assert applied == [("svc", 1), ("svc", 2), ("svc", 3)]
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(f"SELECT id, doc FROM {db_schema}.t ORDER BY id")
        assert [(r["id"], json.loads(r["doc"])) for r in rows] == [(1, {"a": 1}), (2, {"b": 2})]
    finally:
        await conn.close()
    assert await migrate(postgres_url, db_schema, [MigrationSource("svc", directory)]) == []


async def test_a_failing_python_migration_rolls_back(
    postgres_url: str, db_schema: str, tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "0001_table.sql": "CREATE TABLE t (id int);\n",
            "0002_bad.py": (
                "async def migrate(conn):\n"
                "    await conn.execute('INSERT INTO t VALUES (1)')\n"
                "    await conn.execute('SELECT * FROM missing_table')\n"
            ),
        },
    )
    with pytest.raises(MigrationError, match=r"0002_bad\.py"):
        await migrate(postgres_url, db_schema, [MigrationSource("svc", directory)])
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {db_schema}.t") == 0
    finally:
        await conn.close()
