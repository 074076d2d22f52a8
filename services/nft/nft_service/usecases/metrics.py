"""The nft service's own metrics, on the kit's registry (built once in app.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STOPPED = ("dead_lettered", "failed")
"""Label values of the dead-letter metrics: the mint states that wait for an operator."""
REVOCATION_OUTCOMES = ("revoked", "never_minted", "after_mint", "retrying")


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
        # The operator alert: a ticket whose mint stopped and waits for an operator (its buyer
        # is told the ticket is delayed). Labels are pre-set so the first one counts in rate().
        self.dead_lettered = Counter(
            "nft_mint_dead_lettered",
            "Tickets whose mint stopped for an operator (state: dead_lettered = retries "
            "exhausted, failed = a permanent error); alert on any increase.",
            ["state"],
            registry=registry,
        )
        self.dead_lettered_now = Gauge(
            "nft_mint_dead_lettered_tickets",
            "Tickets waiting for an operator now, by state (refreshed with the wallet check).",
            ["state"],
            registry=registry,
        )
        for state in STOPPED:
            self.dead_lettered.labels(state)
            self.dead_lettered_now.labels(state)
        self.revocations = Counter(
            "nft_revocations",
            "Revocations by outcome: revoked (burned or frozen on chain), never_minted (revoked "
            "before the mint reached the chain), after_mint (accepted; applied once the mint in "
            "flight lands), retrying (applying failed for now; the minters retry).",
            ["outcome"],
            registry=registry,
        )
        for outcome in REVOCATION_OUTCOMES:
            self.revocations.labels(outcome)
