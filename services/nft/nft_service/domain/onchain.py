"""A ticket as the chain sees it, and the rules that compare it with our record and answer
"does this wallet hold this ticket" (the chain is the truth for ownership; the record is not)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nft_service.domain.model import Ownership, TicketNft
from nft_service.domain.states import MintState, NftStatus


@dataclass(frozen=True, slots=True)
class Holding:
    """A token account of a ticket's mint: whose it is, how many tokens, frozen or not."""

    account: str
    wallet: str
    amount: int
    frozen: bool


@dataclass(frozen=True, slots=True)
class TicketOnChain:
    """A ticket's mint and whoever holds its token, read at `slot`."""

    exists: bool
    supply: int
    decimals: int
    has_mint_authority: bool
    uri: str
    holder: Holding | None
    slot: int
    checked_at: datetime

    @property
    def holder_wallet(self) -> str:
        return self.holder.wallet if self.holder is not None else ""

    @property
    def frozen(self) -> bool:
        return self.holder is not None and self.holder.frozen

    @property
    def revoked(self) -> bool:
        """Burned (supply 0) or frozen: it admits nobody."""
        return self.exists and (self.supply == 0 or self.frozen)


def matches_record(ticket: TicketNft, view: TicketOnChain) -> bool:
    """Whether the chain agrees with our record of `ticket`."""
    if ticket.mint_state is not MintState.MINTED:
        return not view.exists
    if not view.exists or view.decimals != 0 or view.has_mint_authority:
        return False
    if view.uri != ticket.metadata_uri:
        return False
    if ticket.status is NftStatus.REVOKED:
        return view.revoked
    return view.supply == 1 and not view.frozen and view.holder_wallet == ticket.owner_wallet


def presented_ownership(
    supply: int | None, presented: Holding | None, *, record_revoked: bool
) -> Ownership | None:
    """The answer from the mint (`supply`, None when there is no mint) and the presented
    wallet's token account alone; None when the wallet does not hold it (then the answer
    depends on who does: `holder_ownership`). A ticket revoked before it was minted has no mint:
    it is REVOKED, not "not minted yet"."""
    if supply is None:
        return Ownership.REVOKED if record_revoked else Ownership.NOT_MINTED
    if supply == 0:
        return Ownership.REVOKED
    if presented is not None and presented.amount > 0:
        return Ownership.REVOKED if presented.frozen or record_revoked else Ownership.OWNED
    return None


def holder_ownership(holder: Holding | None) -> Ownership:
    """The answer for a wallet that does not hold the ticket, given who does."""
    return Ownership.REVOKED if holder is not None and holder.frozen else Ownership.NOT_OWNER
