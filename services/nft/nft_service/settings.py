"""Settings of the nft service: the kit's settings, its event relay's (meshkit.routing) and this
service's own.

The chain is chosen here: `SOLANA_CHAIN=local` runs LiteSVM in-process (the default for `make run`
and the tests), `SOLANA_CHAIN=rpc` talks to any Solana JSON-RPC endpoint. Production refuses the
local chain, loopback RPC stand-ins, dev keys, and a loopback or long metadata base URL (every
byte of a ticket's uri is rent the payer pays).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from meshkit.routing import RelaySettings
from meshkit.settings import is_local_url
from nft_service.domain.metadata import MAX_PRODUCTION_BASE_URL_CHARS, MAX_SYMBOL_BYTES

LAMPORTS_PER_SOL = 1_000_000_000


class NftSettings(RelaySettings):
    """Environment variables of the nft service (see the README for the full list)."""

    service_name: ClassVar[str] = "nft"
    default_grpc_port: ClassVar[int] = 50052
    default_ops_port: ClassVar[int] = 9102
    default_http_port: ClassVar[int] = 8082

    # --- chain ------------------------------------------------------------------------------
    solana_chain: Literal["local", "rpc"] = Field(
        "local",
        description="local = LiteSVM in-process (dev/test only); rpc = SOLANA_RPC_URL.",
    )
    solana_rpc_url: str = Field(
        "", description="Solana JSON-RPC endpoint (devnet/mainnet) when SOLANA_CHAIN=rpc."
    )
    solana_cluster: str = Field(
        "",
        description="Cluster name reported by GetMintingWallet; default localnet for the local "
        "chain, else derived from the RPC URL.",
    )
    solana_commitment: Literal["processed", "confirmed", "finalized"] = Field(
        "confirmed", description="Commitment a mint must reach to count as landed."
    )
    solana_rpc_timeout_s: float = Field(
        10.0,
        description="HTTP timeout of one RPC request (rate limit, breaker and retries: the "
        'kit guard "solana" in PROVIDER_POLICIES).',
    )
    solana_confirm_timeout_s: float = Field(
        60.0,
        description="How long one send waits for confirmation before the mint is retried "
        "(the retry checks the chain first, so nothing is minted twice).",
    )
    solana_confirm_poll_s: float = Field(
        0.5, description="Interval between signature status polls while confirming."
    )
    solana_resend_interval_s: float = Field(
        2.0, description="Re-send the same signed bytes this often until confirmed or expired."
    )
    solana_local_state_file: Path | None = Field(
        None,
        description="Where the local chain keeps the accounts it created across restarts; "
        "default DEV_DIR/nft/local-chain.jsonl.",
    )
    solana_local_persist: bool = Field(
        True, description="Persist the local chain's accounts (off: memory only)."
    )
    solana_dev_airdrop_lamports: int = Field(
        1000 * LAMPORTS_PER_SOL,
        description="Dev/test only: fund the payer up to this balance at start (local chain "
        "airdrop, or requestAirdrop on a test cluster).",
    )

    # --- keys -------------------------------------------------------------------------------
    nft_payer_key: SecretStr = Field(
        SecretStr(""),
        description="Payer / mint / delegate authority secret key: base58 or a JSON byte "
        "array (solana-keygen format). Never logged.",
    )
    nft_payer_key_file: str = Field(
        "",
        description="File holding the payer key (base58 or JSON array); dev default "
        "DEV_DIR/nft/payer.json, generated when absent.",
    )
    nft_derivation_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC secret deriving mint addresses and custodial wallets (>= 32 chars; "
        "never change it once tickets exist); dev default generated under DEV_DIR/nft.",
    )

    # --- metadata ---------------------------------------------------------------------------
    nft_metadata_base_url: str = Field(
        "",
        description="Public base URL of the metadata documents, which the HTTP port serves at "
        "GET /m/<address>: the on-chain uri is <base>/<base58 sha256 of the JSON>, and every "
        "byte of it costs 6,960 lamports of rent per ticket, so production refuses a base "
        f"longer than {MAX_PRODUCTION_BASE_URL_CHARS} characters (e.g. https://tkt.example/m, "
        "21); dev default http://<HTTP_HOST>:<http port>/m.",
    )
    nft_symbol: str = Field(
        "TIX",
        description=f"Token symbol written on every ticket NFT (at most {MAX_SYMBOL_BYTES} "
        "bytes, UTF-8).",
    )

    # --- minting ----------------------------------------------------------------------------
    nft_max_batch: int = Field(100, description="Maximum tickets in one MintTickets request.")
    nft_mint_workers: int = Field(2, description="Mint queue workers in this process.")
    nft_worker_batch: int = Field(50, description="Tickets one worker claims at a time.")
    nft_worker_concurrency: int = Field(
        16, description="Transactions sent at once per worker round (RPC chain)."
    )
    nft_worker_poll_s: float = Field(0.2, description="Queue poll interval when idle.")
    nft_worker_lease_s: float = Field(
        120.0,
        description="How long a claimed mint stays with its worker before another may take "
        "it over (a crashed worker's mints resume after this); keep it well above "
        "SOLANA_CONFIRM_TIMEOUT_S.",
    )
    nft_max_attempts: int = Field(
        6, description="Send attempts per ticket before it is dead-lettered."
    )
    nft_retry_base_s: float = Field(0.5, description="First retry delay (then doubling).")
    nft_retry_max_s: float = Field(60.0, description="Cap of the retry delay.")
    nft_default_revocation: Literal["burn", "freeze"] = Field(
        "burn", description="How RevokeTicket revokes when the request does not say."
    )
    nft_low_balance_lamports: int = Field(
        LAMPORTS_PER_SOL, description="Minting wallet balance below which it is reported low."
    )
    nft_wallet_check_interval_s: float = Field(
        60.0, description="How often the minting wallet balance gauge is refreshed."
    )

    @field_validator("nft_symbol")
    @classmethod
    def _check_symbol(cls, value: str) -> str:
        if len(value.encode()) > MAX_SYMBOL_BYTES:
            raise ValueError(f"at most {MAX_SYMBOL_BYTES} bytes (UTF-8), got {len(value.encode())}")
        return value

    # --- derived values -----------------------------------------------------------------------
    @property
    def cluster(self) -> str:
        if self.solana_cluster:
            return self.solana_cluster
        if self.solana_chain == "local":
            return "localnet"
        url = self.solana_rpc_url.lower()
        for name in ("mainnet-beta", "mainnet", "devnet", "testnet"):
            if name in url:
                return "mainnet-beta" if name == "mainnet" else name
        return "custom"

    @property
    def local_state_path(self) -> Path:
        return self.solana_local_state_file or self.dev_dir / "nft" / "local-chain.jsonl"

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.solana_chain == "local":
            problems.append("SOLANA_CHAIN=local (the in-process LiteSVM chain is for dev/test)")
        elif not self.solana_rpc_url:
            problems.append("SOLANA_RPC_URL is required")
        elif is_local_url(self.solana_rpc_url):
            problems.append("SOLANA_RPC_URL points at this machine (a local RPC stand-in)")
        if not self.nft_payer_key.get_secret_value() and not self.nft_payer_key_file:
            problems.append("NFT_PAYER_KEY or NFT_PAYER_KEY_FILE is required")
        elif self.nft_payer_key_file and self._under_dev_dir(self.nft_payer_key_file):
            problems.append("NFT_PAYER_KEY_FILE is a dev key under DEV_DIR")
        if len(self.nft_derivation_secret.get_secret_value()) < 32:
            problems.append("NFT_DERIVATION_SECRET is required (at least 32 characters)")
        if not self.nft_metadata_base_url:
            problems.append("NFT_METADATA_BASE_URL is required")
        elif is_local_url(self.nft_metadata_base_url):
            problems.append("NFT_METADATA_BASE_URL points at this machine")
        elif not self.nft_metadata_base_url.startswith("https://"):
            problems.append("NFT_METADATA_BASE_URL must be https")
        elif len(self.nft_metadata_base_url.rstrip("/")) > MAX_PRODUCTION_BASE_URL_CHARS:
            problems.append(
                f"NFT_METADATA_BASE_URL is longer than {MAX_PRODUCTION_BASE_URL_CHARS} characters "
                "(every byte of a ticket's uri costs 6,960 lamports of rent)"
            )
        return problems

    def _under_dev_dir(self, path: str) -> bool:
        try:
            return Path(path).resolve().is_relative_to(self.dev_dir.resolve())
        except OSError:
            return False
