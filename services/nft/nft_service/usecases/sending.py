"""Sending the platform's own transactions (transfer, burn, freeze): the step custody and the
revocations share. The payer signs with a fresh blockhash; the outcome becomes a domain answer:
the signature when it landed (or was already processed), else the domain error that says what a
caller can do about it."""

from __future__ import annotations

from collections.abc import Callable

from solders.instruction import Instruction
from solders.keypair import Keypair

from nft_service.adapters.chain import Chain, ChainError, ErrorKind, TxStatus
from nft_service.adapters.chain.token import sign
from nft_service.domain.errors import ChainRejected, ChainUnavailable, MintingWalletEmpty


class PlatformSender:
    """Signs with the platform's payer and submits (build once, share)."""

    def __init__(self, chain: Chain, payer: Keypair) -> None:
        self._chain = chain
        self._payer = payer
        self.payer = payer.pubkey()

    async def send(
        self, instructions: Callable[[], list[Instruction]], funding: frozenset[int]
    ) -> str:
        """Sign with a fresh blockhash and submit; re-sign once if the blockhash expired."""
        for _ in range(2):
            try:
                blockhash = await self._chain.latest_blockhash()
                tx = sign(instructions(), self._payer, blockhash.blockhash, self.payer)
                outcome = await self._chain.submit(tx, blockhash, funding)
            except ChainError as exc:
                raise ChainUnavailable("the chain is not reachable", retry_after=1.0) from exc
            if outcome.status is TxStatus.LANDED:
                return str(outcome.signature)
            error = outcome.error
            if outcome.status is TxStatus.UNKNOWN or error is None or error.retryable:
                # It may still land: the retry reads the chain first.
                raise ChainUnavailable(
                    "the transaction was not confirmed; retry", retry_after=2.0
                ) from error
            if error.kind is ErrorKind.BLOCKHASH_EXPIRED:
                continue
            if error.kind is ErrorKind.INSUFFICIENT_FUNDS:
                raise MintingWalletEmpty()
            if error.kind is ErrorKind.ALREADY_PROCESSED:
                return str(outcome.signature)
            raise ChainRejected(error.message)
        raise ChainUnavailable("blockhash kept expiring; retry", retry_after=1.0)
