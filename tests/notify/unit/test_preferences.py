"""Consent decisions: suppressions, opt-outs, marketing opt-in, quiet hours in time zones (DST
included), the HIGH priority bypass, and what an unsubscribe changes."""

from __future__ import annotations

from datetime import UTC, datetime

from notify_service.domain import preferences as p
from notify_service.domain.model import (
    Category,
    CategoryPreference,
    Channel,
    ChannelPreference,
    Preferences,
    Priority,
    QuietHours,
    Suppression,
    SuppressionReason,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def decide(prefs: Preferences | None = None, **kw: object) -> p.Decision:
    values: dict[str, object] = {
        "preferences": prefs,
        "suppression": None,
        "channel": Channel.EMAIL,
        "category": Category.EVENT_UPDATES,
        "priority": Priority.NORMAL,
        "when": NOW,
    }
    values.update(kw)
    return p.decide(**values)  # type: ignore[arg-type]


def test_defaults_send_everything_but_marketing() -> None:
    assert decide().verdict is p.Verdict.SEND
    assert decide(category=Category.MARKETING) == p.Decision(p.Verdict.SUPPRESS, "not_opted_in")


def test_category_and_channel_opt_outs_most_specific_wins() -> None:
    prefs = Preferences(
        "u",
        categories=(
            CategoryPreference(Category.EVENT_UPDATES, None, False),
            CategoryPreference(Category.EVENT_UPDATES, Channel.SMS, True),
            CategoryPreference(Category.MARKETING, None, True),
        ),
    )
    assert decide(prefs).reason == "opted_out"
    assert decide(prefs, channel=Channel.SMS).verdict is p.Verdict.SEND
    assert decide(prefs, category=Category.MARKETING).verdict is p.Verdict.SEND
    off = Preferences("u", channels=(ChannelPreference(Channel.EMAIL, False),))
    assert decide(off, category=Category.ACCOUNT).reason == "opted_out"
    assert decide(off, category=Category.TRANSACTIONAL).verdict is p.Verdict.SEND


def test_suppressions_block_all_but_an_unsubscribe_keeps_transactional() -> None:
    bounce = Suppression(Channel.EMAIL, "a@x.test", SuppressionReason.HARD_BOUNCE)
    assert decide(suppression=bounce, category=Category.TRANSACTIONAL).reason == "hard_bounce"
    unsub = Suppression(Channel.EMAIL, "a@x.test", SuppressionReason.UNSUBSCRIBED)
    assert decide(suppression=unsub).reason == "unsubscribed"
    assert decide(suppression=unsub, category=Category.TRANSACTIONAL).verdict is p.Verdict.SEND


def quiet(start: str, end: str, tz: str) -> Preferences:
    def minutes(hhmm: str) -> int:
        h, m = hhmm.split(":")
        return int(h) * 60 + int(m)

    return Preferences("u", quiet_hours=QuietHours(True, minutes(start), minutes(end), tz))


def test_overnight_quiet_hours_in_the_recipients_zone_defer_to_the_local_end() -> None:
    prefs = quiet("22:00", "08:00", "America/Chicago")  # CDT, UTC-5 in June
    at_23 = datetime(2026, 6, 16, 4, 0, tzinfo=UTC)  # 23:00 Chicago
    decision = decide(prefs, when=at_23)
    assert decision.verdict is p.Verdict.DEFER and decision.reason == "quiet_hours"
    assert decision.until == datetime(2026, 6, 16, 13, 0, tzinfo=UTC)  # 08:00 Chicago
    at_03 = datetime(2026, 6, 16, 8, 0, tzinfo=UTC)  # 03:00 Chicago, same window
    assert decide(prefs, when=at_03).until == datetime(2026, 6, 16, 13, 0, tzinfo=UTC)
    afternoon = datetime(2026, 6, 16, 18, 0, tzinfo=UTC)  # 13:00 Chicago
    assert decide(prefs, when=afternoon).verdict is p.Verdict.SEND
    # The same instant is quiet in Chicago and not in Tokyo (22:00-08:00 there: 13:00 JST).
    tokyo = quiet("22:00", "08:00", "Asia/Tokyo")
    assert decide(tokyo, when=at_23).verdict is p.Verdict.SEND


def test_same_day_window_and_the_recipients_zone_as_fallback() -> None:
    prefs = quiet("12:00", "14:00", "")
    kathmandu = datetime(2026, 6, 15, 7, 0, tzinfo=UTC)  # 12:45 in Kathmandu (UTC+05:45)
    decision = decide(prefs, when=kathmandu, recipient_time_zone="Asia/Kathmandu")
    assert decision.until == datetime(2026, 6, 15, 8, 15, tzinfo=UTC)  # 14:00 there
    assert decide(prefs, when=kathmandu).verdict is p.Verdict.SEND  # 07:00 UTC is outside


def test_quiet_hours_follow_daylight_saving_time() -> None:
    prefs = quiet("22:00", "08:00", "America/New_York")
    # The night the clocks go forward (8 March 2026, 02:00 EST → 03:00 EDT): 08:00 EDT.
    spring = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)  # 23:00 EST on the 7th
    assert decide(prefs, when=spring).until == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    # The night they go back (1 November 2026): 08:00 EST.
    autumn = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 23:00 EDT on 31 October
    assert decide(prefs, when=autumn).until == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    # A window ending inside the spring-forward gap (02:30 does not exist that night).
    gap = quiet("01:00", "02:30", "America/New_York")
    at_0130 = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)  # 01:30 EST
    until = decide(gap, when=at_0130).until
    assert until is not None and until > at_0130
    assert until == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT: moved past the gap


def test_high_priority_transactional_and_account_bypass_quiet_hours_only() -> None:
    prefs = quiet("00:00", "23:59", "UTC")
    high = Priority.HIGH
    assert decide(prefs, category=Category.TRANSACTIONAL, priority=high).verdict is p.Verdict.SEND
    assert decide(prefs, category=Category.ACCOUNT, priority=high).verdict is p.Verdict.SEND
    assert decide(prefs, category=Category.TRANSACTIONAL).verdict is p.Verdict.DEFER
    marketing_in = Preferences(
        "u",
        categories=(CategoryPreference(Category.MARKETING, None, True),),
        quiet_hours=prefs.quiet_hours,
    )
    assert decide(marketing_in, category=Category.MARKETING, priority=high).verdict is (
        p.Verdict.DEFER
    )


def test_rules_setpreferences_enforces() -> None:
    bad = Preferences(
        "u",
        channels=(ChannelPreference(Channel.SMS, True), ChannelPreference(Channel.SMS, False)),
        categories=(CategoryPreference(Category.TRANSACTIONAL, None, False),),
        quiet_hours=QuietHours(True, 60, 60, "Mars/Olympus"),
    )
    fields = {v.field for v in p.check(bad)}
    assert fields == {
        "preferences.categories[0].enabled",
        "preferences.channels[1]",
        "preferences.quiet_hours.end_minute",
        "preferences.quiet_hours.time_zone",
    }


def test_what_an_unsubscribe_turns_off() -> None:
    base = Preferences("u", categories=(CategoryPreference(Category.MARKETING, None, True),))
    after = p.unsubscribed(base, Category.MARKETING, Channel.EMAIL)
    assert decide(after, category=Category.MARKETING).reason == "opted_out"
    assert decide(after, category=Category.MARKETING, channel=Channel.SMS).verdict is (
        p.Verdict.SEND
    )
    from_receipt = p.unsubscribed(base, Category.TRANSACTIONAL, Channel.EMAIL)
    for category in (Category.MARKETING, Category.ACCOUNT, Category.EVENT_UPDATES):
        assert decide(from_receipt, category=category).verdict is p.Verdict.SUPPRESS
    assert decide(from_receipt, category=Category.TRANSACTIONAL).verdict is p.Verdict.SEND
