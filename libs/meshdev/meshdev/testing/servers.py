"""In-process service servers on port 0 with real stubs, and token helpers, for tests.

`app_factory` starts a service the same way its process does (same `App`, same interceptor,
health, migrations) against the session's embedded Postgres and Redis, in a fresh schema, on
port 0; `tokens` mints dev-signed JWTs for any subject, role and audience.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

from meshkit.auth import TokenMinter, ensure_dev_keys, load_private_key
from meshkit.server import App, ServiceDefinition
from meshkit.settings import DEV_ISSUER

__all__ = ["TestTokens", "app_factory", "channel_for", "dev_dir", "running_app", "tokens"]


class TestTokens:
    """Dev-signed tokens: `user(...)` for people, `service(...)` for `svc:<name>` callers."""

    __test__ = False  # not a test class

    def __init__(self, dev_dir: Path) -> None:
        keys = ensure_dev_keys(dev_dir)
        self.minter = TokenMinter(
            load_private_key(keys.private_key_path), kid=keys.kid, issuer=DEV_ISSUER
        )

    def user(
        self,
        sub: str = "user-1",
        roles: Iterable[str] = ("buyer",),
        *,
        aud: str,
        ttl: float = 300,
        **claims: Any,
    ) -> str:
        return self.minter.mint(subject=sub, audience=aud, ttl=ttl, roles=roles, extra=claims)

    def service(self, name: str, *, aud: str, ttl: float = 60) -> str:
        return self.minter.mint(subject=f"svc:{name}", audience=aud, ttl=ttl)

    @staticmethod
    def metadata(token: str, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
        md: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
        if request_id:
            md += (("x-request-id", request_id),)
        return md


@asynccontextmanager
async def running_app(
    definition: ServiceDefinition,
    *,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    **overrides: Any,
) -> AsyncIterator[App]:
    """Start a service in-process on free ports, in a fresh schema; stop and drop it after."""
    schema = overrides.pop("db_schema", f"t_{uuid.uuid4().hex[:12]}")
    values: dict[str, Any] = {
        "app_env": "test",
        "database_url": postgres_url,
        "redis_url": redis_url,
        "db_schema": schema,
        "grpc_port": 0,
        "ops_port": 0,
        "http_port": 0,
        "dev_dir": dev_dir,
        "shutdown_grace_s": 2.0,
        "health_check_interval_s": 0.2,
        "access_log": True,
        # Each test app gets its own rate limits and breakers (tests run one after another
        # against one Redis; state left by one must not trip the next).
        "guard_key_prefix": f"guard-{schema}",
    }
    values.update(overrides)
    settings = definition.settings_cls(**values)
    app = App(definition, settings)
    try:
        await app.start()
        yield app
    finally:
        await app.stop()
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def dev_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dev key pair for the whole test session."""
    path = tmp_path_factory.mktemp("dev")
    ensure_dev_keys(path)
    return path


@pytest.fixture(scope="session")
def tokens(dev_dir: Path) -> TestTokens:
    return TestTokens(dev_dir)


AppFactory = Callable[..., Awaitable[App]]


@pytest_asyncio.fixture(loop_scope="session")
async def app_factory(
    postgres_url: str, redis_url: str, dev_dir: Path
) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    """`app = await app_factory(definition, **settings)` — stopped and dropped at teardown."""
    async with AsyncExitStack() as stack:

        async def start(definition: ServiceDefinition, **overrides: Any) -> App:
            values: dict[str, Any] = {"postgres_url": postgres_url, "redis_url": redis_url}
            values.update(overrides)
            cm: AbstractAsyncContextManager[App] = running_app(
                definition, dev_dir=dev_dir, **values
            )
            return await stack.enter_async_context(cm)

        yield start


def channel_for(app: App) -> grpc.aio.Channel:
    """A client channel to an in-process app (close it, or use `async with`)."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
