"""Consent: may this notification be sent to this person now, later, or not at all?

Rules, in order:
1. An address on the suppression list (hard bounce, complaint, SMS STOP) gets nothing; one that
   unsubscribed through a link (a guest) gets only TRANSACTIONAL.
2. TRANSACTIONAL is always sent (receipts, tickets, refunds cannot be opted out of).
3. A channel turned off stops everything else on it.
4. Per category, the most specific entry wins (this category on this channel, then this
   category on every channel); without one, every category is on except MARKETING, which
   needs an explicit opt-in.
5. Quiet hours in the recipient's time zone *defer* what passes, to the end of the quiet
   window; HIGH priority TRANSACTIONAL and ACCOUNT messages (tickets at the door, security
   codes) are sent through them.

Quiet hours are minutes after local midnight; an end before the start spans midnight
(22:00-08:00). The end is computed on the local calendar, so the deferral follows daylight
saving time: 08:00 local is 08:00 local on the day the clocks change too (a local time that does
not exist that day is moved past the gap).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notify_service.domain.errors import Violation
from notify_service.domain.model import (
    Category,
    CategoryPreference,
    Channel,
    ChannelPreference,
    Preferences,
    Priority,
    QuietHours,
    Suppression,
)

BYPASS_QUIET_HOURS = frozenset({Category.TRANSACTIONAL, Category.ACCOUNT})
"""Categories whose HIGH priority messages are sent during quiet hours."""


class Verdict(enum.StrEnum):
    SEND = "send"
    DEFER = "defer"
    SUPPRESS = "suppress"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    """SUPPRESS: error_code (`opted_out`, `not_opted_in`, the suppression reason); DEFER:
    `quiet_hours`."""
    until: datetime | None = None
    """DEFER: when the quiet window ends (UTC)."""


SEND = Decision(Verdict.SEND)


def defaults(user_id: str) -> Preferences:
    """What a user who never set anything has: everything on, marketing off, no quiet hours."""
    return Preferences(user_id=user_id)


def zone(name: str) -> ZoneInfo | None:
    """The IANA zone, or None when unknown."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def check(preferences: Preferences, field: str = "preferences") -> list[Violation]:
    """Rules SetPreferences enforces beyond the contract's."""
    problems: list[Violation] = []
    for i, item in enumerate(preferences.categories):
        if item.category is Category.TRANSACTIONAL and not item.enabled:
            problems.append(
                Violation(
                    f"{field}.categories[{i}].enabled",
                    "transactional notifications cannot be turned off",
                )
            )
    seen: set[tuple[Category, Channel | None]] = set()
    for i, item in enumerate(preferences.categories):
        key = (item.category, item.channel)
        if key in seen:
            problems.append(Violation(f"{field}.categories[{i}]", "listed twice"))
        seen.add(key)
    channels: set[Channel] = set()
    for i, c in enumerate(preferences.channels):
        if c.channel in channels:
            problems.append(Violation(f"{field}.channels[{i}]", "listed twice"))
        channels.add(c.channel)
    quiet = preferences.quiet_hours
    if quiet.enabled:
        if quiet.start_minute == quiet.end_minute:
            problems.append(
                Violation(f"{field}.quiet_hours.end_minute", "must differ from start_minute")
            )
        if quiet.time_zone and zone(quiet.time_zone) is None:
            problems.append(Violation(f"{field}.quiet_hours.time_zone", "unknown IANA time zone"))
    return problems


def _category_enabled(
    preferences: Preferences, category: Category, channel: Channel
) -> bool | None:
    """The user's choice for this category on this channel; None when they made none."""
    specific = general = None
    for item in preferences.categories:
        if item.category is not category:
            continue
        if item.channel is channel:
            specific = item.enabled
        elif item.channel is None:
            general = item.enabled
    if specific is not None:
        return specific
    return general


def _channel_enabled(channels: Iterable[ChannelPreference], channel: Channel) -> bool:
    return next((c.enabled for c in channels if c.channel is channel), True)


def in_quiet_hours(quiet: QuietHours, when: datetime, fallback_zone: str = "") -> datetime | None:
    """When `when` falls inside the quiet window: the window's end (UTC); else None."""
    if not quiet.enabled or quiet.start_minute == quiet.end_minute:
        return None
    tz = zone(quiet.time_zone) or zone(fallback_zone) or ZoneInfo("UTC")
    local = when.astimezone(tz)
    minute = local.hour * 60 + local.minute
    start, end = quiet.start_minute, quiet.end_minute
    if start < end:
        inside = start <= minute < end
        end_day = local.date()
    else:  # overnight: [start, 24:00) and [00:00, end)
        inside = minute >= start or minute < end
        end_day = local.date() + timedelta(days=1) if minute >= start else local.date()
    if not inside:
        return None
    naive_end = datetime(end_day.year, end_day.month, end_day.day, end // 60, end % 60)
    return _local_to_utc(naive_end, tz)


def _local_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time; a time skipped by a DST jump maps to the
    first instant after the gap, an ambiguous one to its first occurrence."""
    aware = naive.replace(tzinfo=tz, fold=0)
    as_utc = aware.astimezone(UTC)
    if as_utc.astimezone(tz).replace(tzinfo=None) != naive:  # in the gap: move past it
        later = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return max(as_utc, later)
    return as_utc


def decide(
    *,
    preferences: Preferences | None,
    suppression: Suppression | None,
    channel: Channel,
    category: Category,
    priority: Priority,
    when: datetime,
    recipient_time_zone: str = "",
) -> Decision:
    """May a notification go out at `when` (module docstring)?"""
    transactional = category is Category.TRANSACTIONAL
    if suppression is not None and (suppression.reason.blocks_transactional or not transactional):
        return Decision(Verdict.SUPPRESS, suppression.reason.value)
    prefs = preferences or defaults("")
    if not transactional:
        if not _channel_enabled(prefs.channels, channel):
            return Decision(Verdict.SUPPRESS, "opted_out")
        chosen = _category_enabled(prefs, category, channel)
        if chosen is False:
            return Decision(Verdict.SUPPRESS, "opted_out")
        if chosen is None and category is Category.MARKETING:
            return Decision(Verdict.SUPPRESS, "not_opted_in")
    if priority is Priority.HIGH and category in BYPASS_QUIET_HOURS:
        return SEND
    until = in_quiet_hours(prefs.quiet_hours, when, recipient_time_zone)
    if until is not None:
        return Decision(Verdict.DEFER, "quiet_hours", until)
    return SEND


def unsubscribed(preferences: Preferences, category: Category, channel: Channel) -> Preferences:
    """`preferences` after a one-click unsubscribe from a `category` message on `channel`: that
    category off on that channel, or, from a TRANSACTIONAL message (which cannot be turned
    off), every other category off there."""
    targets = (
        [c for c in Category if c is not Category.TRANSACTIONAL]
        if category is Category.TRANSACTIONAL
        else [category]
    )
    kept = [
        c for c in preferences.categories if not (c.category in targets and c.channel is channel)
    ]
    added = [CategoryPreference(t, channel, False) for t in targets]
    return Preferences(
        user_id=preferences.user_id,
        channels=preferences.channels,
        categories=tuple(kept + added),
        quiet_hours=preferences.quiet_hours,
    )
