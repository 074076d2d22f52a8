"""The nft service's own metrics, on the kit's registry (built once in app.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.mints = Counter(
            "nft_mint_outcomes",
            "Mint attempts by outcome (minted, retrying, failed, dead_lettered, recovered).",
            ["outcome"],
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "nft_mint_queue_to_chain_seconds",
            "Time from MintTickets to the mint confirmed on chain.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=registry,
        )
        self.balance = Gauge(
            "nft_minting_wallet_balance_lamports",
            "Balance of the minting (fee payer) wallet.",
            registry=registry,
        )
        self.low_balance = Gauge(
            "nft_minting_wallet_low",
            "1 when the minting wallet is below its low-balance threshold.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "nft_mint_queue_depth", "Tickets waiting to be minted.", registry=registry
        )
