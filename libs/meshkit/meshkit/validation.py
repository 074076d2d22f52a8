"""Input validation before any handler runs: the contracts' rules, plus a generic guard.

Two checks, run by the kit's call layer on every request message of every business RPC:

1. the rules declared in the protos with protovalidate annotations (`buf.validate`): required
   fields, lengths, patterns, UUIDs, ranges, repeated bounds, enums defined-only;
2. a generic guard for what such rules do not say and no handler should ever see: NUL characters
   in strings (PostgreSQL text cannot hold them), `google.protobuf.Timestamp` / `Duration` values
   outside their documented range (converting them raises), and strings, bytes, repeated fields
   and maps beyond global maxima (one request must not make a handler loop over a million items).

Every violation becomes one `BadRequest.FieldViolation` with the field's path in the request
(`line_items[2].quantity`, `metadata["note"]`) and the rule that failed as its reason; the call
ends with INVALID_ARGUMENT and nothing was stored or sent. A request whose bytes do not even parse
gets the same answer instead of grpc's generic INTERNAL.

Per message type the walk is planned once (which fields can break which limit); types with no
such field cost nothing, and the walk only visits fields that are set. Most requests skip the
walk altogether: a request of at most 1,000 bytes with no zero byte, of a type without
timestamps or durations, cannot break any of these limits (a NUL character is a zero byte in
UTF-8, and every string, byte or list item takes at least a byte), and the deserializer, which
sees the bytes, vouches for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import protovalidate
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from meshkit.errors import FieldViolation, InvalidArgument

__all__ = [
    "Limits",
    "RequestValidator",
    "Undecodable",
    "tolerant_deserializer",
]

# google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_TS_MIN, _TS_MAX = -62_135_596_800, 253_402_300_799
# google.protobuf.Duration: +-10,000 years.
_DURATION_MAX = 315_576_000_000
_NANOS_MAX = 999_999_999

_STRING = FieldDescriptor.TYPE_STRING
_BYTES = FieldDescriptor.TYPE_BYTES
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"


@dataclass(frozen=True, slots=True)
class Limits:
    """Global maxima of the generic guard; a field's own rule in the contract may be tighter."""

    max_string_chars: int = 65_536
    """Longest string field (characters)."""
    max_bytes: int = 4 * 1024 * 1024
    """Largest bytes field (a raw webhook body fits)."""
    max_items: int = 1_000
    """Most items in one repeated field or map."""


# The request the deserializer found too small and clean to break the guard (see module doc).
# Deserialization and the handler run in the same per-RPC task, so the mark reaches the check.
_vouched: ContextVar[object] = ContextVar("meshkit_guard_vouched", default=None)
_SMALL = 1_000  # bytes: no list can hold more items than this, nor a string more characters


class Undecodable:
    """Stands in for a request whose bytes did not parse (see `tolerant_deserializer`)."""

    __slots__ = ("error", "type_name")

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error


def tolerant_deserializer(
    deserialize: Callable[[bytes], Any], type_name: str, *, vouch: bool = False
) -> Callable[[bytes], Any]:
    """Wrap a request deserializer so malformed bytes reach the layer as `Undecodable` (and end
    as INVALID_ARGUMENT) instead of grpc's INTERNAL "Exception deserializing request!".

    With `vouch` (the type has no timestamps or durations: `RequestValidator.can_vouch`), a
    request whose bytes cannot break the generic guard is marked so the check skips its walk."""

    def parse(data: bytes) -> Any:
        try:
            message = deserialize(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return Undecodable(type_name, str(exc) or type(exc).__name__)
        if vouch and len(data) <= _SMALL and b"\x00" not in data:
            _vouched.set(message)
        return message

    return parse


# -- the generic guard -------------------------------------------------------------------------

# One step of a message type's plan: (field, kind) where kind says what to check.
_Kind = int
_K_STRING, _K_BYTES, _K_MESSAGE, _K_TIMESTAMP, _K_DURATION = range(5)


@dataclass(frozen=True, slots=True)
class _Step:
    field: FieldDescriptor
    kind: _Kind | None  # of the value (a map's: of its values); None: a scalar to count only
    repeated: bool
    is_map: bool = False
    map_key_string: bool = False


def _kind_of(field: Any) -> _Kind | None:
    if field.type == _STRING:
        return _K_STRING
    if field.type == _BYTES:
        return _K_BYTES
    if field.type == _MESSAGE:
        name = field.message_type.full_name
        if name == _TIMESTAMP:
            return _K_TIMESTAMP
        if name == _DURATION:
            return _K_DURATION
        return _K_MESSAGE
    return None


class _Planner:
    """Which fields of a message type the guard must look at, by field number (None: no field
    of this type, however deeply nested, can ever break the guard)."""

    def __init__(self) -> None:
        self._plans: dict[str, dict[int, _Step] | None] = {}

    def plan(self, descriptor: Any) -> dict[int, _Step] | None:
        name = descriptor.full_name
        if name in self._plans:
            return self._plans[name]
        self._plans[name] = {}  # provisional: a recursive type terminates here
        steps: dict[int, _Step] = {}
        for field in descriptor.fields:
            repeated = field.is_repeated
            if field.type == _MESSAGE and field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name
                steps[field.number] = _Step(
                    field,
                    _kind_of(entry["value"]),
                    True,
                    is_map=True,
                    map_key_string=entry["key"].type == _STRING,
                )
                continue
            kind = _kind_of(field)
            if kind is None and not repeated:
                continue
            if kind == _K_MESSAGE and not repeated and self.plan(field.message_type) is None:
                continue
            steps[field.number] = _Step(field, kind, repeated)
        plan = steps or None
        self._plans[name] = plan
        return plan


def key_subscript(key: object) -> str:
    """`["key"]` / `[3]` for a map key in a field path; long or unprintable string keys are cut
    and escaped so that the path stays short and readable."""
    if not isinstance(key, str):
        return f"[{str(key).lower() if isinstance(key, bool) else key}]"
    text = key if len(key) <= 40 else key[:39] + "\u2026"
    return "[" + json.dumps(text, ensure_ascii=True) + "]"


def _string_problem(value: str, limits: Limits) -> tuple[str, str] | None:
    if "\x00" in value:
        return "string.no_nul", "must not contain NUL characters"
    if len(value) > limits.max_string_chars:
        return "string.max_len", f"must be at most {limits.max_string_chars} characters"
    return None


def _time_problem(message: Any, kind: _Kind) -> tuple[str, str] | None:
    seconds, nanos = message.seconds, message.nanos
    if kind == _K_TIMESTAMP:
        if not (_TS_MIN <= seconds <= _TS_MAX) or not (0 <= nanos <= _NANOS_MAX):
            return "timestamp.valid", "must be a timestamp between years 1 and 9999"
        return None
    if (
        not (-_DURATION_MAX <= seconds <= _DURATION_MAX)
        or not (-_NANOS_MAX <= nanos <= _NANOS_MAX)
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        return "duration.valid", "must be a duration within +-10000 years"
    return None


class _Guard:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.planner = _Planner()

    def walk(self, message: Message, path: str = "") -> Iterator[FieldViolation]:
        plan = self.planner.plan(message.DESCRIPTOR)
        if plan is None:
            return
        for field, value in message.ListFields():  # set fields only
            step = plan.get(field.number)
            if step is None:
                continue
            here = f"{path}{field.name}"
            if step.is_map:
                yield from self._map(value, here, step)
            elif step.repeated:
                if len(value) > self.limits.max_items:
                    yield FieldViolation(
                        here,
                        f"must contain at most {self.limits.max_items} items",
                        "repeated.max_items",
                    )
                elif step.kind is not None:
                    for index, item in enumerate(value):
                        yield from self._one(item, f"{here}[{index}]", step.kind)
            else:
                yield from self._one(value, here, step.kind)

    def _one(self, value: Any, path: str, kind: _Kind | None) -> Iterator[FieldViolation]:
        problem: tuple[str, str] | None = None
        if kind == _K_STRING:
            problem = _string_problem(value, self.limits)
        elif kind == _K_BYTES:
            if len(value) > self.limits.max_bytes:
                problem = "bytes.max_len", f"must be at most {self.limits.max_bytes} bytes"
        elif kind in (_K_TIMESTAMP, _K_DURATION):
            problem = _time_problem(value, kind)
        elif kind == _K_MESSAGE:
            yield from self.walk(value, f"{path}.")
        if problem is not None:
            yield FieldViolation(path, problem[1], problem[0])

    def _map(self, value: Any, path: str, step: _Step) -> Iterator[FieldViolation]:
        if len(value) > self.limits.max_items:
            yield FieldViolation(
                path, f"must contain at most {self.limits.max_items} entries", "map.max_pairs"
            )
            return
        for key in value:
            if step.map_key_string:
                problem = _string_problem(key, self.limits)
                if problem is not None:
                    # The key itself is bad: name the map, not the (unprintable) key.
                    yield FieldViolation(path, f"keys {problem[1]}", problem[0])
                    continue
            if step.kind is not None:
                yield from self._one(value[key], path + key_subscript(key), step.kind)


# -- protovalidate ----------------------------------------------------------------------------


def _path(violation: Any) -> str:
    """A protovalidate violation's `buf.validate.FieldPath` as `a.b[2].c["key"]`."""
    text = ""
    for element in violation.proto.field.elements:
        text += ("." if text else "") + element.field_name
        subscript = element.subscript  # a Oneof(field=..., value=...) or None
        if subscript is not None:
            text += key_subscript(subscript.value)
    return text


class RequestValidator:
    """Checks request messages against the contract's rules and the generic guard.

    Build one per process (it caches per message type) and call `violations(message)` or
    `check(message)`."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._engine = protovalidate.Validator()
        self._guard = _Guard(self.limits)
        self._timeless: dict[str, bool] = {}

    def can_vouch(self, descriptor: Any) -> bool:
        """Whether small, zero-byte-free requests of this type can skip the guard's walk (no
        timestamp or duration anywhere in it, and limits no tighter than the bytes check)."""
        limits = self.limits
        if min(limits.max_items, limits.max_string_chars, limits.max_bytes) < _SMALL:
            return False
        return self._is_timeless(descriptor)

    def _is_timeless(self, descriptor: Any) -> bool:
        name = descriptor.full_name
        if name not in self._timeless:
            self._timeless[name] = True  # provisional: a recursive type terminates here
            self._timeless[name] = all(
                field.type != _MESSAGE
                or (
                    field.message_type.full_name not in (_TIMESTAMP, _DURATION)
                    and self._is_timeless(field.message_type)
                )
                for field in descriptor.fields
            )
        return self._timeless[name]

    def violations(self, message: Message | Undecodable) -> list[FieldViolation]:
        """Every violation in `message`; empty when it is valid."""
        if isinstance(message, Undecodable):
            text = f"the request is not a valid {message.type_name}: {message.error}"
            return [FieldViolation("", text, "request.decode")]
        found = [] if _vouched.get() is message else list(self._guard.walk(message))
        if found:
            # Rules cannot be evaluated meaningfully over values that break the guard (a NUL in
            # a pattern-checked string, an unrepresentable timestamp): report the guard first.
            return found
        return [
            FieldViolation(_path(v), v.proto.message or v.proto.rule_id, v.proto.rule_id)
            for v in self._engine.collect_violations(message)
        ]

    def check(self, message: Message | Undecodable) -> None:
        """Raise INVALID_ARGUMENT with every field violation when `message` is not valid."""
        found = self.violations(message)
        if found:
            raise invalid_request(found)


def invalid_request(violations: Iterable[FieldViolation]) -> InvalidArgument:
    vs = tuple(violations)
    text = "invalid request: " + "; ".join(
        f"{v.field}: {v.description}" if v.field else v.description for v in vs[:10]
    )
    if len(vs) > 10:
        text += f"; and {len(vs) - 10} more"
    return InvalidArgument(text, field_violations=vs, reason="INVALID_REQUEST")
