"""The nft service's errors: a small typed hierarchy, with no transport in it.

Use cases raise these; `api/errors.py` (the service's error map, registered with the kit) is the
one place that turns them into gRPC statuses. The base class says what kind of answer it is:

  InvalidInput  the request, as sent, breaks a rule the contract cannot state (field paths)
  NotFound      the thing asked for does not exist (or the caller may not know it does)
  Forbidden     the caller may not do this
  Refused       the system is not in a state where this can ever succeed as asked
  TryLater      a transient condition: the same request may succeed later (`retry_after`)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field: its path in the request (`tickets[1].ticket_id`) and what is wrong."""

    field: str
    description: str


class NftError(Exception):
    """Base of every error the nft service means a client to see."""

    reason: ClassVar[str] = "NFT_ERROR"
    """Stable machine-readable cause (google.rpc.ErrorInfo.reason)."""

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after


class InvalidInput(NftError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__(
            "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in violations)
        )
        self.violations = tuple(violations)


def raise_if(violations: Sequence[Violation]) -> None:
    if violations:
        raise InvalidInput(violations)


class NotFound(NftError):
    reason = "NOT_FOUND"


class MintJobNotFound(NotFound):
    reason = "MINT_JOB_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("no such mint job")


class TicketNotFound(NotFound):
    """No such ticket. With `retry_after` (RevokeTicket: the revocation of a refund may arrive
    before the MintTickets of its payment) the answer says that the same request may find it
    later, so it is not kept as the final answer of its idempotency key."""

    reason = "TICKET_NOT_FOUND"

    def __init__(self, *, retry_after: float | None = None) -> None:
        message = "no such ticket NFT" if retry_after is None else "no such ticket NFT (yet)"
        super().__init__(message, retry_after=retry_after)


class Forbidden(NftError):
    reason = "PERMISSION_DENIED"


class NotYourTickets(Forbidden):
    reason = "NOT_YOUR_TICKETS"

    def __init__(self) -> None:
        super().__init__("buyers can only list their own tickets")


class Refused(NftError):
    reason = "FAILED_PRECONDITION"


class PaymentHasOtherMintJob(Refused):
    reason = "PAYMENT_HAS_OTHER_MINT_JOB"

    def __init__(self, job_id: str) -> None:
        super().__init__(
            "this payment already has a mint job with other tickets", metadata={"job_id": job_id}
        )


class TicketsOfOtherPayment(Refused):
    reason = "TICKET_OF_OTHER_PAYMENT"

    def __init__(self, ticket_ids: Sequence[str]) -> None:
        super().__init__(
            "tickets already belong to another payment",
            metadata={"ticket_ids": ",".join(ticket_ids[:20])},
        )
        self.ticket_ids = tuple(ticket_ids)


class TicketRevoked(Refused):
    reason = "TICKET_REVOKED"

    def __init__(self, message: str = "the ticket is revoked") -> None:
        super().__init__(message)


class TicketRevocationPending(Refused):
    reason = "TICKET_REVOCATION_PENDING"

    def __init__(self) -> None:
        super().__init__("the ticket is being revoked")


class TicketNoHolder(Refused):
    reason = "TICKET_NO_HOLDER"

    def __init__(self) -> None:
        super().__init__("nobody holds the ticket on chain")


class TicketNotMinted(Refused):
    reason = "TICKET_NOT_MINTED"

    def __init__(self) -> None:
        super().__init__("the ticket was never minted")


class MintingWalletEmpty(Refused):
    reason = "MINTING_WALLET_EMPTY"

    def __init__(self) -> None:
        super().__init__("the minting wallet cannot pay for this transaction")


class ChainRejected(Refused):
    reason = "CHAIN_REJECTED"

    def __init__(self, detail: str) -> None:
        super().__init__(f"the chain refused the transaction: {detail}")


class TryLater(NftError):
    """Transient: the same request may succeed later. `retry_after` is a hint in seconds."""

    reason = "UNAVAILABLE"


class TicketNotMintedYet(TryLater):
    """The ticket is still in the mint queue. Not final: the idempotency key is released, so
    the client's retry of the same request runs again."""

    reason = "TICKET_NOT_MINTED_YET"

    def __init__(self) -> None:
        super().__init__("the ticket is still being minted; retry", retry_after=5.0)


class ChainUnavailable(TryLater):
    """The chain could not be asked, or did not answer in time (the outcome may be unknown:
    the retry reads the chain first)."""

    reason = "UNAVAILABLE"
