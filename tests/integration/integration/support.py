"""Helpers for the integration service's tests: callers with tokens, the OAuth dance as a
browser follows it, and reads of the service's tables."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from google.protobuf.message import Message

from meshdev.testing.servers import TestTokens
from meshkit.server import App
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2 as pb
from tickettoken.integration.v1 import integration_pb2_grpc

REDIRECT = "https://admin.tickettoken.test/integrations/callback"
VENUE = "venue-nash"
OTHER_VENUE = "venue-memphis"
Start = Callable[..., Awaitable[App]]
M = TypeVar("M", bound=Message)


def key() -> str:
    return str(uuid.uuid4())


@dataclass
class Client:
    app: App
    stub: integration_pb2_grpc.IntegrationServiceStub
    tokens: TestTokens

    def md(
        self, sub: str = "venue-admin-1", venues: Sequence[str] = (VENUE,), *, admin: bool = False
    ) -> tuple[tuple[str, str], ...]:
        roles = ["admin"] if admin else ["venue_admin"]
        token = self.tokens.user(sub, roles, aud=self.app.settings.audience, venue_ids=list(venues))
        return self.tokens.metadata(token)

    def admin(self) -> tuple[tuple[str, str], ...]:
        return self.md("ops-admin", (), admin=True)

    async def start(
        self,
        provider: int,
        *,
        venue: str = VENUE,
        md: Any = None,
        redirect: str = REDIRECT,
    ) -> pb.StartOAuthResponse:
        return await self.stub.StartOAuth(
            pb.StartOAuthRequest(
                idempotency_key=key(), venue_id=venue, provider=provider, redirect_uri=redirect
            ),
            metadata=md or self.md(),
        )

    async def complete(
        self, state: str, params: dict[str, str], *, md: Any = None
    ) -> pb.CompleteOAuthResponse:
        extra = {k: v for k, v in params.items() if k not in ("state", "code", "error")}
        return await self.stub.CompleteOAuth(
            pb.CompleteOAuthRequest(
                idempotency_key=key(),
                state=state,
                code=params.get("code", ""),
                error=params.get("error", ""),
                extra_params=extra,
            ),
            metadata=md or self.md(),
        )

    async def dance(self, provider: int, *, venue: str = VENUE, md: Any = None) -> pb.Connection:
        started = await self.start(provider, venue=venue, md=md)
        params = await consent(started.authorization_url)
        assert params["state"] == started.state
        done = await self.complete(started.state, params, md=md)
        return done.connection


async def consent(authorization_url: str, **extra: str) -> dict[str, str]:
    """The account owner consents: follow the provider's authorize URL, read the redirect's
    query (code, state, realmId …) without following it."""
    url = authorization_url + (
        "&" + "&".join(f"{k}={v}" for k, v in extra.items()) if extra else ""
    )
    async with httpx.AsyncClient() as http:
        answer = await http.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return dict(parse_qsl(urlsplit(answer.headers["location"]).query))


async def rows(app: App, query: str, *args: Any) -> list[dict[str, Any]]:
    assert app.kit is not None
    async with app.kit.db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(query, *args)]


async def count(app: App, table: str) -> int:
    return int((await rows(app, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


async def events(app: App, event_cls: type[M]) -> list[M]:
    """The staged events of one type, oldest first, as their contract messages."""
    found = await rows(
        app,
        "SELECT payload FROM outbox WHERE topic = $1 ORDER BY seq",
        event_cls.DESCRIPTOR.full_name,
    )
    result = []
    for row in found:
        envelope = common_pb2.EventEnvelope.FromString(row["payload"])
        event = event_cls()
        assert envelope.payload.Unpack(event)
        result.append(event)
    return result


async def until(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 60.0) -> None:
    """Poll `check` until it holds (a condition, not a timing: the limit only ends a hang)."""

    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), limit_s)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


async def quiet(app: App) -> None:
    """Until no job is active on any connection (every follow-up ran too)."""

    async def idle() -> bool:
        found = await rows(app, "SELECT count(*) AS n FROM sync_job_entities WHERE active")
        return int(found[0]["n"]) == 0

    await until(idle, "every sync job ended")
