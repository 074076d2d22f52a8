"""State machines of a ticket: its mint (`MintState`) and its record (`NftStatus`).

The transition tables are the rules; the store enforces them with conditional UPDATEs (a write
whose row is not in one of `sources(target)` changes nothing), so a stale worker or a racing
request can never move a ticket backwards.

Mint state (one ticket's way onto the chain):

  QUEUED ──send──▶ SUBMITTED ──landed──▶ MINTED
     │                 │ ▲
     │ chain down      │ └─ re-sent (fresh blockhash, same address)
     ▼                 ▼
  RETRYING ◀──retryable error── ; permanent error ─▶ FAILED ; attempts spent ─▶ DEAD_LETTERED
  FAILED / DEAD_LETTERED ──operator requeue──▶ RETRYING
  QUEUED / RETRYING (nothing ever sent), FAILED / DEAD_LETTERED (not on chain) ──revoked──▶
      CANCELLED (never minted; the record is REVOKED)

"Nothing ever sent" is not a state: it is a ticket without any recorded signature, a condition
the store adds to the move (domain/revocation.py says which revocation takes which way).

A job's status is never stored: it is derived from its tickets on read (`job_status`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class MintState(enum.StrEnum):
    """State of one ticket's mint (stored as text; mirrors the contract's MintState)."""

    QUEUED = "QUEUED"
    SUBMITTED = "SUBMITTED"
    MINTED = "MINTED"
    RETRYING = "RETRYING"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in (
            MintState.MINTED,
            MintState.FAILED,
            MintState.DEAD_LETTERED,
            MintState.CANCELLED,
        )

    @property
    def failed(self) -> bool:
        return self in (MintState.FAILED, MintState.DEAD_LETTERED)


PENDING_STATES = (MintState.QUEUED, MintState.SUBMITTED, MintState.RETRYING)

MINT_TRANSITIONS: Mapping[MintState, frozenset[MintState]] = {
    MintState.QUEUED: frozenset({MintState.SUBMITTED, MintState.RETRYING, MintState.CANCELLED}),
    MintState.SUBMITTED: frozenset(
        {
            MintState.SUBMITTED,
            MintState.MINTED,
            MintState.RETRYING,
            MintState.FAILED,
            MintState.DEAD_LETTERED,
        }
    ),
    MintState.RETRYING: frozenset(
        {
            MintState.SUBMITTED,
            MintState.MINTED,
            MintState.RETRYING,
            MintState.FAILED,
            MintState.DEAD_LETTERED,
            MintState.CANCELLED,
        }
    ),
    MintState.MINTED: frozenset(),
    MintState.FAILED: frozenset({MintState.RETRYING, MintState.CANCELLED}),
    MintState.DEAD_LETTERED: frozenset({MintState.RETRYING, MintState.CANCELLED}),
    MintState.CANCELLED: frozenset(),
}


def can_move(current: MintState, target: MintState) -> bool:
    return target in MINT_TRANSITIONS[current]


def sources(target: MintState) -> tuple[MintState, ...]:
    """Every mint state a ticket may be in for a move to `target` (what the store's
    conditional UPDATE accepts)."""
    return tuple(s for s, targets in MINT_TRANSITIONS.items() if target in targets)


class NftStatus(enum.StrEnum):
    """State of a ticket NFT record (mirrors the contract's TicketNftStatus)."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    FAILED = "FAILED"


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIALLY_FAILED = "PARTIALLY_FAILED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


def job_status(states: Iterable[MintState], *, touched: bool) -> JobStatus:
    """A job's status from its tickets' states, computed on read so it can never disagree with
    them (`touched`: a worker has picked up at least one ticket). Tickets revoked before they
    were minted (CANCELLED) do not count: a job of only those is CANCELLED."""
    every = list(states)
    if not every or not all(s.final for s in every):
        return JobStatus.RUNNING if touched else JobStatus.QUEUED
    values = [s for s in every if s is not MintState.CANCELLED]
    if not values:
        return JobStatus.CANCELLED
    minted = sum(1 for s in values if s is MintState.MINTED)
    if minted == len(values):
        return JobStatus.SUCCEEDED
    return JobStatus.PARTIALLY_FAILED if minted else JobStatus.FAILED
