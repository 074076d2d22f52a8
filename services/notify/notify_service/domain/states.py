"""The notification status machine: which moves are allowed, in one table.

    QUEUED ──claim──▶ SENDING ──accepted──▶ SENT ──receipt──▶ DELIVERED / BOUNCED / FAILED
      ▲                 │  └─ retry later ─▶ QUEUED
      │                 ├─ permanent ─────▶ FAILED / BOUNCED
      │                 └─ retries spent ─▶ DEAD_LETTERED ──operator retry──▶ QUEUED
      └─ QUEUED ─(opt-out, suppression found at send time)─▶ SUPPRESSED

SENDING is entered (and an attempt recorded) before every provider call; a crash leaves it there,
and the next worker to claim it knows the provider may have the message already. Receipts may
overtake our own bookkeeping (the provider accepted, we crashed before recording SENT), so a
receipt may also move SENDING (or QUEUED, when the crashed attempt was given back) forward.
The store applies every move with a conditional UPDATE on the source states listed here.
"""

from __future__ import annotations

from notify_service.domain.model import Status

S = Status

TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.SENDING: frozenset({S.QUEUED, S.SENDING}),
    S.QUEUED: frozenset({S.QUEUED, S.SENDING, S.DEAD_LETTERED, S.FAILED}),
    S.SENT: frozenset({S.SENDING}),
    S.DELIVERED: frozenset({S.SENT, S.SENDING, S.QUEUED}),
    S.BOUNCED: frozenset({S.SENDING, S.SENT, S.DELIVERED, S.QUEUED}),
    S.FAILED: frozenset({S.SENDING, S.SENT, S.QUEUED}),
    S.DEAD_LETTERED: frozenset({S.SENDING, S.QUEUED}),
    S.SUPPRESSED: frozenset({S.QUEUED, S.SENDING}),
}
"""target -> the states it may be reached from."""

PENDING = frozenset({S.QUEUED, S.SENDING})
"""States a worker may claim."""
FINAL = frozenset({S.DELIVERED, S.BOUNCED, S.FAILED, S.SUPPRESSED})
RETRYABLE_BY_OPERATOR = frozenset({S.DEAD_LETTERED, S.FAILED})


def sources(target: Status) -> frozenset[Status]:
    """The states `target` may be reached from."""
    return TRANSITIONS.get(target, frozenset())


def can_move(source: Status, target: Status) -> bool:
    return source in sources(target)
