"""Fixtures for the nft integration tests: the service in-process on port 0 with the local chain
(LiteSVM) persisted to the test's own file, real stubs, and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meshdev.standins.solana_rpc import LiteSvmRpcServer
from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from nft_service.app import DEFINITION
from tests.nft.integration.support import AUD, Start
from tickettoken.nft.v1 import nft_pb2_grpc

FAST = {
    "nft_worker_poll_s": 0.05,
    "nft_retry_base_s": 0.02,
    "nft_retry_max_s": 0.2,
    "nft_wallet_check_interval_s": 3600.0,
}


@pytest.fixture
def start_nft(app_factory: Any, tmp_path: Path) -> Start:
    """`app = await start_nft(**settings)`: the nft service with its own chain file."""

    async def start(**overrides: Any) -> App:
        values: dict[str, Any] = {
            **FAST,
            "solana_local_state_file": tmp_path / "chain.jsonl",
        }
        values.update(overrides)
        app: App = await app_factory(DEFINITION, **values)
        return app

    return start


@pytest.fixture
async def nft_app(start_nft: Start) -> App:
    return await start_nft()


@pytest.fixture
async def stub(nft_app: App) -> AsyncIterator[nft_pb2_grpc.NftServiceStub]:
    async with channel_for(nft_app) as channel:
        yield nft_pb2_grpc.NftServiceStub(channel)


@pytest.fixture
def payment_md(tokens: TestTokens) -> tuple[tuple[str, str], ...]:
    return tokens.metadata(tokens.service("payment", aud=AUD))


@pytest.fixture
def admin_md(tokens: TestTokens) -> tuple[tuple[str, str], ...]:
    return tokens.metadata(tokens.user("admin-1", ["admin"], aud=AUD))


@pytest.fixture
async def server() -> AsyncIterator[LiteSvmRpcServer]:
    async with LiteSvmRpcServer() as srv:
        yield srv
