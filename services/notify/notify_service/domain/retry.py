"""What a failed send means: retry later, try the next provider, or stop — and when.

Adapters report a failure as a `SendFailure` with a kind:

  TRANSIENT     the provider failed or could not be reached (5xx, timeout, connection, 429,
                its breaker open, no rate slot) after the guard's own retries: the next
                provider may succeed now, this one later;
  UNKNOWN       the request may have been accepted (the connection dropped after the message
                was handed over): as TRANSIENT, but a re-send may make a second copy (same
                Message-ID, so the recipient's side collapses it);
  REJECTED      this provider refused the request itself (bad credentials, account or
                configuration problem): the next provider may succeed, this one will not
                until an operator acts;
  RECIPIENT     the destination refused it (unknown mailbox, invalid or unsubscribed number):
                no provider can deliver it — BOUNCED, and the address is suppressed;
  CONTENT       the message itself was refused (too large, malformed): no retry helps.

`decide` turns the failures of one round (one per provider tried) into the next step.
Backoff is exponential with full jitter (Knock retries 8 times over ~30 minutes; the defaults
here are 6 attempts, 2 s doubling to at most 5 minutes), honouring a provider's Retry-After.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from notify_service.domain.model import Status


class FailureKind(enum.StrEnum):
    TRANSIENT = "transient"
    UNKNOWN = "unknown"
    REJECTED = "rejected"
    RECIPIENT = "recipient"
    CONTENT = "content"

    @property
    def try_next_provider(self) -> bool:
        return self in (FailureKind.TRANSIENT, FailureKind.UNKNOWN, FailureKind.REJECTED)


@dataclass(frozen=True, slots=True)
class SendFailure:
    kind: FailureKind
    code: str
    """Short machine-readable cause, e.g. `smtp_451`, `http_503`, `circuit_open`, `21211`."""
    message: str = ""
    """Detail for operators (never personal data)."""
    retry_after: float | None = None
    suppress: bool = False
    """RECIPIENT: put the address on the suppression list (hard bounce, unsubscribed number)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 2.0
    max_delay: float = 300.0


@dataclass(frozen=True, slots=True)
class Step:
    """What to record after a round that did not send."""

    status: Status
    """QUEUED (retry at `delay`), BOUNCED, FAILED or DEAD_LETTERED."""
    delay: float
    error_code: str
    error_message: str
    suppress: bool = False


def backoff(attempts: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter: a uniform draw up to base * 2^(attempts-1), capped."""
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** max(0, attempts - 1))
    return rng.uniform(ceiling / 2, ceiling)


def decide(
    failures: Sequence[SendFailure],
    attempts: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Step:
    """The step after a round in which every provider tried failed (`failures` in the order
    tried; `attempts` counts this round)."""
    assert failures, "decide needs the round's failures"
    rng = rng or random.Random()
    last = failures[-1]
    final = next((f for f in failures if not f.kind.try_next_provider), None)
    if final is not None:
        status = Status.BOUNCED if final.kind is FailureKind.RECIPIENT else Status.FAILED
        return Step(status, 0.0, final.code, final.message, final.suppress)
    if all(f.kind is FailureKind.REJECTED for f in failures):
        # Every provider refuses us: an operator must fix credentials or accounts; then retry.
        return Step(Status.DEAD_LETTERED, 0.0, last.code, last.message)
    if attempts >= policy.max_attempts:
        return Step(Status.DEAD_LETTERED, 0.0, last.code, last.message)
    delay = backoff(attempts, policy, rng)
    hints = [f.retry_after for f in failures if f.retry_after is not None]
    if hints:
        delay = max(delay, min(policy.max_delay, min(hints)))
    return Step(Status.QUEUED, delay, last.code, last.message)
