"""What revoking a ticket does, by where its mint stands: the rule RevokeTicket, the minter and
the store's conditional updates follow.

  REVOKED already                  ALREADY     nothing to do: the answer is the ticket as it is
  a revocation accepted before     PENDING     the first request's reason and method stand
  minted                           ON_CHAIN    burn or freeze now
  queued or retrying, nothing      CANCEL      revoked at once with nothing minted: no
    ever sent                                  transaction, no lamports
  a send may land (submitted, or   AFTER_MINT  recorded; the minter completes the mint at its
    retrying after a send)                     fixed address, then revokes it right after
  failed or dead-lettered          SETTLE      the chain is read: our mint absent → revoked with
                                               nothing minted; present (it landed unseen) → back
                                               in the queue, recorded minted, then revoked

Why a mint already sent is completed rather than skipped: its transaction may still land (a
cluster accepts it until its blockhash expires, and a worker that crashed cannot tell). Sending
the mint again at the same address either lands it or fails because the earlier send landed;
either way the outcome is known and the ticket is then revoked on chain. So every revoked ticket
ends burned or frozen on chain, or never minted, without waiting on block heights. The cost is
one mint's rent in the rare case of a refund racing its own mint.

A ticket with a revocation pending has always been sent at least once (an unsent one is
cancelled in the same statement that would have recorded it), and signatures are never removed.
"""

from __future__ import annotations

import enum

from nft_service.domain.model import TicketNft
from nft_service.domain.states import MintState, NftStatus


class RevocationPath(enum.Enum):
    ALREADY = "already"
    PENDING = "pending"
    ON_CHAIN = "on_chain"
    CANCEL = "cancel"
    AFTER_MINT = "after_mint"
    SETTLE = "settle"


def revocation_path(ticket: TicketNft) -> RevocationPath:
    """The way a revocation of `ticket` (as read now) takes (module docstring)."""
    if ticket.status is NftStatus.REVOKED:
        return RevocationPath.ALREADY
    if ticket.revocation_pending:
        return RevocationPath.PENDING
    state = ticket.mint_state
    if state is MintState.MINTED:
        return RevocationPath.ON_CHAIN
    if state.failed:
        return RevocationPath.SETTLE
    if state in (MintState.QUEUED, MintState.RETRYING) and ticket.never_sent:
        return RevocationPath.CANCEL
    return RevocationPath.AFTER_MINT
