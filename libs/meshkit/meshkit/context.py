"""Per-call state in contextvars, set by the kit's interceptor and read anywhere below it.

Domain code and kit helpers (idempotency, outbound clients, logging) read the current request id,
principal, method and deadline from here instead of threading the grpc context through.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NamedTuple

# The trace context lives in OpenTelemetry's context (meshkit.tracing); these two are re-exported
# for the callers that read it from here.
from meshkit.tracing import current_traceparent, traceparent_var

__all__ = [
    "ANONYMOUS",
    "CallInfo",
    "Principal",
    "call_var",
    "current_call",
    "current_request_id",
    "current_traceparent",
    "request_id_var",
    "traceparent_var",
]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (roles from the token) or a service (`sub` = `svc:<name>`)."""

    subject: str
    roles: frozenset[str] = frozenset()
    claims: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_service(self) -> bool:
        return self.subject.startswith("svc:")

    @property
    def service_name(self) -> str | None:
        return self.subject[4:] if self.is_service else None

    def has_role(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)

    @property
    def venue_ids(self) -> frozenset[str]:
        """The venues named in the token's `venue_ids` claim (what a venue admin manages)."""
        raw = self.claims.get("venue_ids", [])
        if isinstance(raw, list):
            return frozenset(str(v) for v in raw)
        return frozenset()


ANONYMOUS = Principal(subject="anonymous")


class CallInfo(NamedTuple):
    """The current RPC: full method name (`/pkg.Service/Method`), caller and deadline.

    A NamedTuple (built in C) rather than a frozen dataclass: one is made per RPC."""

    method: str
    request_id: str
    principal: Principal
    deadline: float | None  # time.monotonic() value, or None when the client set no deadline

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, None when there is none."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
call_var: ContextVar[CallInfo | None] = ContextVar("call", default=None)


def current_call() -> CallInfo | None:
    """The CallInfo of the RPC being served, or None outside an RPC (jobs, relays)."""
    return call_var.get()


def current_request_id() -> str | None:
    return request_id_var.get()
