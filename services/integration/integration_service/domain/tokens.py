"""When a token must be refreshed: before the access token expires (with a lead, so that no call
ever sends an expired token) and before the refresh token itself runs out unused (Square asks for
a refresh at least every 7 days; QuickBooks' 100 days roll with every refresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

EXPIRY_SKEW_S = 60.0
"""An access token this close to its expiry counts as expired (clock skew, call duration)."""


@dataclass(frozen=True, slots=True)
class RefreshTiming:
    access_lead_s: float
    """Refresh this long before the access token expires (the proactive job)."""
    refresh_lead_s: float
    """Refresh this long before the refresh token expires unused."""


def expired(now: datetime, access_expires_at: datetime | None) -> bool:
    """Whether a call must not use the access token any more (None: it never expires)."""
    if access_expires_at is None:
        return False
    return access_expires_at - now <= timedelta(seconds=EXPIRY_SKEW_S)


def refresh_due_at(
    access_expires_at: datetime | None,
    refresh_expires_at: datetime | None,
    timing: RefreshTiming,
) -> datetime | None:
    """When the proactive job should refresh (None: never, e.g. tokens that do not expire)."""
    candidates = []
    if access_expires_at is not None:
        candidates.append(access_expires_at - timedelta(seconds=timing.access_lead_s))
    if refresh_expires_at is not None:
        candidates.append(refresh_expires_at - timedelta(seconds=timing.refresh_lead_s))
    return min(candidates) if candidates else None
