"""What happens to a ticket after a send that did not land: the classified retry policy.

  permanent (insufficient funds, program errors)   → FAILED, never retried automatically
  blockhash expired                                → RETRYING at once: re-signed with a fresh
                                                     blockhash, same mint address
  retryable (429, node behind, unavailable,
  confirmation timeout)                            → RETRYING after capped exponential backoff
                                                     with full jitter (Retry-After as a floor)
  any retry past the attempt limit                 → DEAD_LETTERED (an operator re-queues it by
                                                     sending MintTickets for the payment again
                                                     with a new idempotency key)

Every attempt after the first starts by reading the chain, so a transaction that landed
unseen (crash, lost response, timeout) is found there instead of being sent again.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from nft_service.domain.states import MintState


class ErrorKind(enum.StrEnum):
    """The classes of chain failure the retry policy tells apart (every chain adapter maps its
    failures onto these, so decisions do not depend on which chain answered):

      retryable:  rate_limited (429, honour Retry-After), node_behind, unavailable (5xx,
                  transport errors, timeouts), confirm_timeout — the same request may succeed;
      rebuild:    blockhash_expired — the signed bytes can never land; check the chain, then
                  sign again with a fresh blockhash (same mint address);
      verify:     already_processed, account_in_use — "maybe it already landed": read the chain;
      permanent:  insufficient_funds, program_error — sending it again cannot help.
    """

    RATE_LIMITED = "rate_limited"
    NODE_BEHIND = "node_behind"
    UNAVAILABLE = "unavailable"
    CONFIRM_TIMEOUT = "confirm_timeout"
    BLOCKHASH_EXPIRED = "blockhash_expired"
    ALREADY_PROCESSED = "already_processed"
    ACCOUNT_IN_USE = "account_in_use"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    PROGRAM_ERROR = "program_error"

    @property
    def retryable(self) -> bool:
        """Sending the same request again may succeed."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.NODE_BEHIND,
        ErrorKind.UNAVAILABLE,
        ErrorKind.CONFIRM_TIMEOUT,
    }
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per ticket, and the capped exponential backoff (full jitter) between them."""

    max_attempts: int
    base_delay: float
    max_delay: float

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** max(0, min(attempts - 1, 30)))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class Decision:
    state: MintState
    delay: float  # seconds until the next attempt may start (RETRYING only)


def decide(
    kind: ErrorKind,
    attempts: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """The next state of a ticket whose attempt number `attempts` failed with `kind`."""
    if kind in (ErrorKind.INSUFFICIENT_FUNDS, ErrorKind.PROGRAM_ERROR, ErrorKind.ACCOUNT_IN_USE):
        return Decision(MintState.FAILED, 0.0)
    if attempts >= policy.max_attempts:
        return Decision(MintState.DEAD_LETTERED, 0.0)
    if kind is ErrorKind.BLOCKHASH_EXPIRED or kind is ErrorKind.ALREADY_PROCESSED:
        return Decision(MintState.RETRYING, 0.0)
    delay = policy.backoff(attempts, rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return Decision(MintState.RETRYING, delay)


def not_sent(
    current: MintState,
    attempts: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """The chain could not even be asked (blockhash or account read failed): nothing was sent,
    so no attempt is counted; try again after a backoff. A SUBMITTED ticket stays SUBMITTED
    (its earlier send may still land, so the next round reads the chain first)."""
    state = MintState.SUBMITTED if current is MintState.SUBMITTED else MintState.RETRYING
    delay = policy.backoff(max(1, attempts), rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return Decision(state, delay)
