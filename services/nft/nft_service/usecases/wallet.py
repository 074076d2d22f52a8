"""The minting (fee payer) wallet: GetMintingWallet, the low-balance check the periodic job runs,
and, outside production, the airdrop that funds it at start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from solders.pubkey import Pubkey

from meshkit.db import Database
from nft_service.adapters.chain import Chain, ChainError
from nft_service.adapters.chain.token import mint_cost
from nft_service.domain.errors import ChainUnavailable
from nft_service.domain.metadata import largest_onchain
from nft_service.domain.model import WalletInfo
from nft_service.store import tickets
from nft_service.usecases.metrics import NftMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WalletRules:
    low_balance_lamports: int
    """Below this balance the wallet is reported low."""
    symbol: str
    dev_airdrop_lamports: int
    """Outside production: fund the payer up to this balance at start (0: never)."""


class Wallet:
    def __init__(
        self,
        *,
        db: Database,
        chain: Chain,
        payer: Pubkey,
        metrics: NftMetrics,
        rules: WalletRules,
        base_url: Callable[[], str],
    ) -> None:
        self._db = db
        self._chain = chain
        self._payer = payer
        self._metrics = metrics
        self._rules = rules
        self._base_url = base_url

    async def lamports_per_mint(self) -> int:
        """What one ticket costs the payer: the average recorded by the recent mints, else the
        largest ticket's cost at the rent read from the chain (raises ChainError while the rent
        cannot be read)."""
        async with self._db.acquire() as conn:
            recorded = await tickets.average_mint_cost(conn)
        if recorded is not None:
            return recorded
        largest = largest_onchain(self._rules.symbol, self._base_url())
        return mint_cost(largest, await self._chain.rent()).total

    async def read(self) -> WalletInfo:
        """GetMintingWallet (also refreshes the balance gauges); UNAVAILABLE while the chain
        (its balance or its rent) cannot be read."""
        try:
            balance = await self._chain.get_balance(self._payer)
            per_mint = await self.lamports_per_mint()
        except ChainError as exc:
            raise ChainUnavailable("the chain cannot be read right now", retry_after=1.0) from exc
        info = WalletInfo(
            address=str(self._payer),
            balance=balance.lamports,
            threshold=self._rules.low_balance_lamports,
            lamports_per_mint=per_mint,
            cluster=self._chain.cluster,
            slot=balance.slot,
            checked_at=datetime.now(UTC),
        )
        self._metrics.balance.set(info.balance)
        self._metrics.low_balance.set(1 if info.low else 0)
        return info

    async def check(self) -> WalletInfo:
        """The low-balance check: refresh the gauges, warn when the wallet runs low."""
        info = await self.read()
        if info.low:
            logger.warning(
                "minting wallet balance is low",
                extra={
                    "address": info.address,
                    "balance_lamports": info.balance,
                    "threshold_lamports": info.threshold,
                    "estimated_mints_remaining": info.mints_remaining,
                },
            )
        return info

    async def fund_for_dev(self) -> None:
        """Dev/test only (app.py never calls it in production): top the payer up to the dev
        airdrop target when it is below half of it."""
        target = self._rules.dev_airdrop_lamports
        try:
            balance = (await self._chain.get_balance(self._payer)).lamports
            if balance >= target // 2:
                return
            await self._chain.fund(self._payer, target - balance)
        except ChainError as exc:
            logger.warning("dev airdrop failed", extra={"error": str(exc)})
