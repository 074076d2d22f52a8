"""The nft domain's entities: what a mint job, a ticket NFT and an ownership answer are.

Plain frozen dataclasses and enums, no I/O. The store returns these (SQL in, entities out), the
use cases reason about them, and `api/convert.py` turns them into the contract's messages.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from nft_service.domain.states import JobStatus, MintState, NftStatus, job_status

if TYPE_CHECKING:
    from nft_service.domain.metadata import MetadataVerdict


class Priority(enum.IntEnum):
    """Lower sorts first in the queue (numbers as in the contract's MintPriority)."""

    URGENT = 1
    HIGH = 2
    STANDARD = 3


class RevocationMethod(enum.StrEnum):
    BURN = "burn"
    FREEZE = "freeze"


class TransferReason(enum.IntEnum):
    """Why the platform moved a ticket (numbers as in the contract's TransferReason)."""

    RESALE = 1
    GIFT = 2
    WITHDRAWAL = 3
    ADMIN = 4


class RevokeReason(enum.IntEnum):
    """Why a ticket was revoked (numbers as in the contract's RevokeReason)."""

    REFUND = 1
    FRAUD = 2
    CHARGEBACK = 3
    EVENT_CANCELLED = 4
    OTHER = 5


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """RevokeTicket, in domain terms (`method` already resolved: the request's, else the
    service's default), recorded as it is accepted and applied as recorded."""

    reason: RevokeReason
    method: RevocationMethod
    reference_id: str = ""
    note: str = ""


class Ownership(enum.StrEnum):
    OWNED = "OWNED"
    NOT_OWNER = "NOT_OWNER"
    REVOKED = "REVOKED"
    NOT_MINTED = "NOT_MINTED"


@dataclass(frozen=True, slots=True)
class BuyerContact:
    """Where to reach the buyer: the set fields of the contract's ContactInfo (name, email,
    phone, ...) by name. nft never reads them; it carries them from MintTickets to the events
    that tell notify where to write (and never logs them)."""

    fields: Mapping[str, str] = field(default_factory=dict)


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
    name: str = ""
    """The on-chain name the caller chose (at most 32 bytes); empty: the default."""


@dataclass(frozen=True, slots=True)
class MintRequest:
    """MintTickets, in domain terms."""

    payment_id: str
    order_id: str
    event_id: str
    venue_id: str
    buyer_id: str
    priority: Priority
    tickets: tuple[TicketSpec, ...]
    buyer_contact: BuyerContact = BuyerContact()

    def fingerprint(self) -> bytes:
        """sha256 of the payment's ticket list: the same payment with other tickets is refused
        (the contact is not part of it: it may be corrected on a redelivery; a ticket's name
        only when the caller chose one, so that a ticket without one keeps its fingerprint)."""
        parts = [
            "\x00".join(
                [
                    t.ticket_id,
                    t.owner_wallet,
                    t.event_name,
                    t.venue_name,
                    t.event_starts_at.isoformat() if t.event_starts_at else "",
                    t.section,
                    t.row,
                    t.seat,
                    t.ticket_type,
                    t.image_url,
                    repr(sorted(t.attributes.items())),
                    *([f"name={t.name}"] if t.name else []),
                ]
            )
            for t in self.tickets
        ]
        head = "\x00".join([self.order_id, self.event_id, self.venue_id, self.buyer_id])
        return hashlib.sha256("\x01".join([head, *parts]).encode()).digest()


@dataclass(frozen=True, slots=True)
class MintJob:
    """The durable job of one payment; its status is derived from its tickets."""

    id: uuid.UUID
    payment_id: str
    order_id: str
    event_id: str
    venue_id: str
    buyer_id: str
    priority: Priority
    tickets_fingerprint: bytes
    buyer_contact: BuyerContact
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TicketNft:
    """One ticket: its NFT record and, until it is minted, its place in the mint queue."""

    ticket_id: str
    job_id: uuid.UUID
    position: int
    payment_id: str
    order_id: str
    event_id: str
    venue_id: str
    buyer_id: str
    mint_address: str
    mint_seed: str
    token_program: str
    owner_wallet: str
    custodial: bool
    event_name: str
    venue_name: str
    event_starts_at: datetime | None
    section: str
    row: str
    seat: str
    ticket_type: str
    image_url: str
    attributes: Mapping[str, str]
    metadata_sha: str
    """sha256 (hex) of the metadata document; keys the stored document."""
    metadata_uri: str
    token_name: str
    """The name for the mint; empty: the default (`domain.metadata.default_name`)."""
    token_symbol: str
    """The symbol for the mint; empty: the service's NFT_SYMBOL."""
    status: NftStatus
    mint_state: MintState
    priority: Priority
    attempts: int
    picked_at: datetime | None
    signature: str
    """The last mint transaction sent (the landed one once MINTED)."""
    signatures: tuple[str, ...]
    """Every mint transaction sent, oldest first."""
    cost_lamports: int | None
    """The payer's cost of the mint as last sent (both rents at the chain's rent + fee)."""
    mint_size: int | None
    """Bytes of the mint account as last sent."""
    error_code: str
    error_message: str
    minted_at: datetime | None
    minted_slot: int | None
    revoke_reason: RevokeReason | None
    revocation_method: RevocationMethod | None
    revoke_note: str
    revoke_reference: str
    revoke_signature: str
    revoked_at: datetime | None
    revoke_requested_at: datetime | None
    """When the revocation was accepted (its reason, method, reference and note are recorded
    with it); the status becomes REVOKED once it is applied."""
    created_at: datetime
    updated_at: datetime

    @property
    def spec(self) -> TicketSpec:
        return TicketSpec(
            ticket_id=self.ticket_id,
            owner_wallet=self.owner_wallet,
            event_name=self.event_name,
            venue_name=self.venue_name,
            event_starts_at=self.event_starts_at,
            section=self.section,
            row=self.row,
            seat=self.seat,
            ticket_type=self.ticket_type,
            image_url=self.image_url,
            attributes=self.attributes,
            name=self.token_name,
        )

    def minted(self, signature: str, slot: int, at: datetime) -> TicketNft:
        """This ticket as recorded once its mint (`signature`, landed at `slot`) is recorded
        at `at` (what the store's mark_minted writes)."""
        return replace(
            self,
            mint_state=MintState.MINTED,
            status=NftStatus.ACTIVE,
            signature=signature,
            minted_slot=slot,
            minted_at=at,
            error_code="",
            error_message="",
            updated_at=at,
        )

    @property
    def mint_signature(self) -> str:
        """The signature of the mint that landed; empty until MINTED."""
        return self.signature if self.mint_state is MintState.MINTED else ""

    @property
    def revocation_pending(self) -> bool:
        """A revocation was accepted and is not applied yet (it waits for a mint in flight)."""
        return self.revoke_requested_at is not None and self.status is not NftStatus.REVOKED

    @property
    def never_sent(self) -> bool:
        """No mint transaction was ever signed for sending: nothing can be on chain."""
        return not self.signatures

    @property
    def may_be_on_chain(self) -> bool:
        """A send may have happened (a signature was recorded before an earlier send, or
        SUBMITTED before a crash): the chain must be read before anything is sent again."""
        return not self.never_sent or self.attempts > 0 or self.mint_state is MintState.SUBMITTED


@dataclass(frozen=True, slots=True)
class JobView:
    """A job with its tickets (in request order), as GetMintJob shows it."""

    job: MintJob
    tickets: tuple[TicketNft, ...]

    @property
    def status(self) -> JobStatus:
        return job_status(
            (t.mint_state for t in self.tickets),
            touched=any(t.picked_at is not None for t in self.tickets),
        )

    @property
    def updated_at(self) -> datetime:
        return max([self.job.updated_at, *(t.updated_at for t in self.tickets)])

    @property
    def completed_at(self) -> datetime | None:
        if self.status in (JobStatus.QUEUED, JobStatus.RUNNING) or not self.tickets:
            return None
        return max(t.updated_at for t in self.tickets)


@dataclass(frozen=True, slots=True)
class OwnershipAnswer:
    """VerifyOwnership: what the chain says about one wallet and one ticket right now."""

    status: Ownership
    ticket_id: str
    mint_address: str
    holder_wallet: str
    slot: int
    checked_at: datetime
    metadata: MetadataVerdict | None = None
    """The metadata document check, when asked for."""

    @property
    def owned(self) -> bool:
        return self.status is Ownership.OWNED


@dataclass(frozen=True, slots=True)
class WalletInfo:
    """The minting (fee payer) wallet."""

    address: str
    balance: int
    threshold: int
    lamports_per_mint: int
    cluster: str
    slot: int
    checked_at: datetime

    @property
    def low(self) -> bool:
        return self.balance < self.threshold

    @property
    def mints_remaining(self) -> int:
        return self.balance // max(1, self.lamports_per_mint)


@dataclass(frozen=True, slots=True)
class ListFilter:
    """ListTicketNfts' filters (combined with AND)."""

    owner_wallet: str = ""
    buyer_id: str = ""
    event_id: str = ""
    payment_id: str = ""
    statuses: tuple[NftStatus, ...] = ()

    @property
    def narrows(self) -> bool:
        """At least one filter that selects by who or what (statuses alone do not)."""
        return bool(self.owner_wallet or self.buyer_id or self.event_id or self.payment_id)
