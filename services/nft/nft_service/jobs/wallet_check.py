"""The periodic wallet check (every NFT_WALLET_CHECK_INTERVAL_S on every replica: each exports
its own gauges): the minting wallet's balance and low flag, the mint queue's depth, and the
tickets waiting for an operator (the dead-letter gauge)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nft_service.usecases.metrics import NftMetrics
from nft_service.usecases.minting import Minting
from nft_service.usecases.wallet import Wallet

NAME = "nft-wallet"


def wallet_check(
    wallet: Wallet, minting: Minting, metrics: NftMetrics
) -> Callable[[], Awaitable[None]]:
    """The job's function: `kit.add_periodic_job(NAME, interval, wallet_check(...))`."""

    async def check() -> None:
        await wallet.check()
        metrics.queue_depth.set(await minting.queue_depth())
        for state, count in (await minting.waiting_for_operator()).items():
            metrics.dead_lettered_now.labels(state.value.lower()).set(count)

    return check
