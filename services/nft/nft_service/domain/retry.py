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

import random
from dataclasses import dataclass

from nft_service.chain.base import ErrorKind
from nft_service.domain.model import MintState


@dataclass(frozen=True, slots=True)
class RetryPolicy:
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
