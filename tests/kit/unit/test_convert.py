"""Proto ⇄ domain conversions shared by the services (meshkit.convert)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from meshkit.convert import dataclass_from, message_from, optional_timestamp, timestamp, to_datetime
from tickettoken.common.v1 import common_pb2


@dataclass(frozen=True)
class Contact:
    name: str = ""
    email: str = ""
    nickname: str = ""  # not in the contract: left alone both ways


def test_timestamps_round_trip_in_utc() -> None:
    when = datetime(2026, 12, 1, 14, 0, tzinfo=timezone(timedelta(hours=-6)))
    stamp = timestamp(when)
    assert stamp.ToDatetime(tzinfo=UTC) == when
    assert optional_timestamp(None) is None
    window = common_pb2.TimeRange(start=stamp)
    assert to_datetime(window, "start") == when and to_datetime(window, "end") is None


def test_same_named_fields_are_copied_between_a_message_and_a_dataclass() -> None:
    info = message_from(common_pb2.ContactInfo, Contact(name="Ada", email="ada@example.com"))
    assert info == common_pb2.ContactInfo(name="Ada", email="ada@example.com")
    back = dataclass_from(Contact, common_pb2.ContactInfo(name="Ada", phone="+16155550100"))
    assert back == Contact(name="Ada")
