"""Small conversions every servicer and event builder needs between protos and domain values.

Domain code holds plain values (datetimes, frozen dataclasses); the api layer and the event
builders map them to contract messages. The mappings that are the same in every service live
here: timestamps, and copying same-named scalar fields between a message and a dataclass (e.g. a
domain contact ⇄ `tickettoken.common.v1.ContactInfo`).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["dataclass_from", "message_from", "optional_timestamp", "timestamp", "to_datetime"]

M = TypeVar("M", bound=Message)
D = TypeVar("D")


def timestamp(value: datetime) -> Timestamp:
    """A Timestamp for an aware datetime."""
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def optional_timestamp(value: datetime | None) -> Timestamp | None:
    """`timestamp`, with None staying None (the field stays unset)."""
    return None if value is None else timestamp(value)


def to_datetime(message: Message, field: str) -> datetime | None:
    """The aware (UTC) datetime in `message.<field>`, None when the field is unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def message_from(cls: type[M], value: Any) -> M:
    """A `cls` message with every field of `value` (a dataclass) that the message also has."""
    names = cls.DESCRIPTOR.fields_by_name
    return cls(
        **{f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name in names}
    )


def dataclass_from(cls: type[D], message: Message) -> D:
    """A `cls` dataclass with every field of `message` that the dataclass also has."""
    names = message.DESCRIPTOR.fields_by_name
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    values = {f.name: getattr(message, f.name) for f in fields if f.name in names}
    return cls(**values)
