"""Reading tickets on chain: the step the RPCs (GetTicketNft, VerifyOwnership, TransferTicket,
RevokeTicket) and the minter share.

  view(ticket)            the ticket's mint and whoever holds its token right now
  holding / holder_of     one token account, or the account that holds the token
  confirm_minted(tickets) which of these mints exist on chain as OUR completed ticket NFT (and
                          which addresses are taken by something else): how the minter decides
                          "already minted" without sending anything

The RPC-facing reads raise the domain's `ChainUnavailable` when the chain cannot be read; the
minter-facing ones raise the adapter's `ChainError` (its kind and Retry-After feed the retry
policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from solders.account import Account
from solders.pubkey import Pubkey
from solders.signature import Signature

from nft_service.adapters.chain import Accounts, Chain, ChainError
from nft_service.adapters.chain.token import (
    TOKEN_2022,
    DecodeError,
    MintAccount,
    associated_token_address,
    decode_mint,
    decode_token_account,
)
from nft_service.domain.errors import ChainUnavailable
from nft_service.domain.model import TicketNft
from nft_service.domain.onchain import Holding, TicketOnChain


def decoded_mint(account: Account | None) -> MintAccount | None:
    """The Token-2022 mint in `account`; None when absent or not a mint."""
    if account is None or account.owner != TOKEN_2022:
        return None
    try:
        return decode_mint(bytes(account.data))
    except (DecodeError, ValueError, IndexError):
        return None


def decoded_holding(key: Pubkey, account: Account | None) -> Holding | None:
    """The Token-2022 token account at `key`; None when absent or not a token account."""
    if account is None or account.owner != TOKEN_2022:
        return None
    try:
        state = decode_token_account(bytes(account.data))
    except (DecodeError, ValueError):
        return None
    return Holding(str(key), str(state.owner), state.amount, state.frozen)


def _unavailable() -> ChainUnavailable:
    return ChainUnavailable("the chain cannot be read right now", retry_after=1.0)


class TicketsOnChain:
    """See the module docstring. `payer` is the platform's authority: a mint is ours when it is
    the payer's completed ticket (decimals 0, no mint authority, payer as delegate and metadata
    update authority)."""

    def __init__(self, chain: Chain, payer: Pubkey) -> None:
        self.chain = chain
        self.payer = payer

    async def read(self, keys: Sequence[Pubkey]) -> Accounts:
        try:
            return await self.chain.get_accounts(keys)
        except ChainError as exc:
            raise _unavailable() from exc

    async def holder_of(self, mint: Pubkey) -> Holding | None:
        """The token account that holds the ticket (wherever it went), if any."""
        try:
            holders = await self.chain.token_accounts_of_mint(mint)
        except ChainError as exc:
            raise _unavailable() from exc
        if not holders:
            return None
        (account,) = (await self.read([holders[0]])).accounts
        return decoded_holding(holders[0], account)

    async def view(self, ticket: TicketNft) -> TicketOnChain:
        """The mint and the recorded holder's token account (and, if the token is not there,
        wherever it is)."""
        mint = Pubkey.from_string(ticket.mint_address)
        owner = Pubkey.from_string(ticket.owner_wallet)
        ata = associated_token_address(owner, mint)
        read = await self.read([mint, ata])
        mint_account, ata_account = read.accounts
        now = datetime.now(UTC)
        state = decoded_mint(mint_account)
        if state is None:  # absent, or an account that is not a Token-2022 mint
            return TicketOnChain(False, 0, 0, False, "", None, read.slot, now)
        holder = decoded_holding(ata, ata_account)
        if (holder is None or holder.amount == 0) and state.supply > 0:
            holder = await self.holder_of(mint)
        elif holder is not None and holder.amount == 0:
            holder = None
        return TicketOnChain(
            exists=True,
            supply=state.supply,
            decimals=state.decimals,
            has_mint_authority=state.mint_authority is not None,
            uri=state.uri,
            holder=holder,
            slot=read.slot,
            checked_at=now,
        )

    def is_ours(self, state: MintAccount) -> bool:
        return (
            state.decimals == 0
            and state.mint_authority is None
            and state.permanent_delegate == self.payer
            and state.update_authority == self.payer
        )

    async def confirm_minted(self, tickets: Sequence[TicketNft]) -> tuple[dict[str, int], set[str]]:
        """({ticket_id: slot} of the tickets whose mint exists as our completed NFT, ticket ids
        whose address holds something else). Raises ChainError."""
        if not tickets:
            return {}, set()
        read = await self.chain.get_accounts([Pubkey.from_string(t.mint_address) for t in tickets])
        minted: dict[str, int] = {}
        squatted: set[str] = set()
        for ticket, account in zip(tickets, read.accounts, strict=True):
            if account is None:
                continue
            state = decoded_mint(account)
            if state is not None and self.is_ours(state):
                minted[ticket.ticket_id] = read.slot
            else:
                squatted.add(ticket.ticket_id)
        return minted, squatted

    async def landed_signature(self, ticket: TicketNft, sent_now: str = "") -> str:
        """The signature of the send that landed (the latest one if the chain forgot)."""
        texts = [*ticket.signatures, *([sent_now] if sent_now else [])]
        sent = [Signature.from_string(s) for s in dict.fromkeys(texts)]
        try:
            found = await self.chain.landed(sent)
        except ChainError:
            found = None
        if found is not None:
            return str(found)
        return str(sent[-1]) if sent else ""
