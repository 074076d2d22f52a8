"""The nft domain's vocabulary: states, priorities and the requests it acts on (no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime


class MintState(enum.StrEnum):
    """State of one ticket's mint (stored as text; mirrors the proto's MintState)."""

    QUEUED = "QUEUED"
    SUBMITTED = "SUBMITTED"
    MINTED = "MINTED"
    RETRYING = "RETRYING"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"

    @property
    def final(self) -> bool:
        return self in (MintState.MINTED, MintState.FAILED, MintState.DEAD_LETTERED)


PENDING_STATES = (MintState.QUEUED, MintState.SUBMITTED, MintState.RETRYING)


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIALLY_FAILED = "PARTIALLY_FAILED"
    FAILED = "FAILED"


class NftStatus(enum.StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    FAILED = "FAILED"


class Priority(enum.IntEnum):
    """Lower sorts first in the queue."""

    URGENT = 1
    HIGH = 2
    STANDARD = 3


class RevocationMethod(enum.StrEnum):
    BURN = "burn"
    FREEZE = "freeze"


class Ownership(enum.StrEnum):
    OWNED = "OWNED"
    NOT_OWNER = "NOT_OWNER"
    REVOKED = "REVOKED"
    NOT_MINTED = "NOT_MINTED"


def job_status(states: Iterable[MintState], *, touched: bool) -> JobStatus:
    """A job's status from its tickets' states, computed on read so it can never disagree with
    them (`touched`: a worker has picked up at least one ticket)."""
    values = list(states)
    if not values or not all(s.final for s in values):
        return JobStatus.RUNNING if touched else JobStatus.QUEUED
    minted = sum(1 for s in values if s is MintState.MINTED)
    if minted == len(values):
        return JobStatus.SUCCEEDED
    return JobStatus.PARTIALLY_FAILED if minted else JobStatus.FAILED


@dataclass(frozen=True, slots=True)
class TicketSpec:
    """One ticket to mint, as requested."""

    ticket_id: str
    owner_wallet: str
    event_name: str
    venue_name: str
    event_starts_at: datetime | None
    section: str
    row: str
    seat: str
    ticket_type: str
    image_url: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MintRequest:
    payment_id: str
    order_id: str
    event_id: str
    venue_id: str
    buyer_id: str
    priority: int  # a Priority value once validated
    tickets: tuple[TicketSpec, ...]
