"""Chain access: one interface (`Chain`), a LiteSVM implementation and a JSON-RPC implementation,
chosen by settings in `build_chain`; Token-2022 instruction building and account decoding in
`token.py`."""

from __future__ import annotations

from meshkit.resilience import ProviderGuard
from nft_service.adapters.chain.base import (
    Accounts,
    Balance,
    Chain,
    ChainError,
    ErrorKind,
    RecentBlockhash,
    Rent,
    TxOutcome,
    TxStatus,
)
from nft_service.adapters.chain.local import LocalChain
from nft_service.adapters.chain.rpc import RpcChain, SolanaRpc
from nft_service.settings import NftSettings

__all__ = [
    "Accounts",
    "Balance",
    "Chain",
    "ChainError",
    "ErrorKind",
    "LocalChain",
    "RecentBlockhash",
    "Rent",
    "RpcChain",
    "TxOutcome",
    "TxStatus",
    "build_chain",
]


def build_chain(settings: NftSettings, guard: ProviderGuard) -> Chain:
    """The chain the settings ask for; RPC calls go through `guard` (guard.py)."""
    if settings.solana_chain == "local":
        if settings.is_production:  # settings already refuse this; belt and braces
            raise RuntimeError("the local chain is not available in production")
        return LocalChain(
            state_file=settings.local_state_path if settings.solana_local_persist else None,
            cluster=settings.cluster,
        )
    if not settings.solana_rpc_url:
        raise RuntimeError("SOLANA_RPC_URL is required when SOLANA_CHAIN=rpc")
    rpc = SolanaRpc(
        settings.solana_rpc_url,
        commitment=settings.solana_commitment,
        timeout=settings.solana_rpc_timeout_s,
        guard=guard,
    )
    return RpcChain(
        rpc,
        cluster=settings.cluster,
        commitment=settings.solana_commitment,
        confirm_timeout=settings.solana_confirm_timeout_s,
        poll_interval=settings.solana_confirm_poll_s,
        resend_interval=settings.solana_resend_interval_s,
        send_concurrency=settings.nft_worker_concurrency,
    )
