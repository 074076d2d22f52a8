"""The proactive token refresh: every INTEGRATION_REFRESH_INTERVAL_S, on one replica at a time,
refresh the connections whose access token is about to expire (or whose refresh token would run
out unused), through the same single-flight refresh as the calls use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from integration_service.usecases.tokens import TokenKeeper

NAME = "integration-token-refresh"


def job(tokens: TokenKeeper) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        return await tokens.refresh_due()

    return run
