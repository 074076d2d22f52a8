"""What every sender takes and returns, and how a failed call is reported.

A sender gets a fully built outbound message (the use case decided everything: content,
headers, Message-ID, callbacks) and either returns `Accepted` or raises `SendError` carrying a
`SendFailure` (domain/retry.py says what each kind means). The kit guard's own refusals
(breaker open, no rate slot, provider still failing after its retries, out of time) become
TRANSIENT failures here, so the use case can fail over to the next provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from meshkit.errors import MeshError
from meshkit.resilience import (
    CircuitOpen,
    ProviderDeadlineExceeded,
    ProviderThrottled,
    RateLimited,
)
from notify_service.domain.model import Attachment, Channel
from notify_service.domain.retry import FailureKind, SendFailure


@dataclass(frozen=True, slots=True)
class OutboundEmail:
    notification_id: str
    message_id: str
    """`<...@domain>`: the same on every attempt of one notification."""
    from_address: str
    to_address: str
    to_name: str
    subject: str
    text: str
    html: str
    reply_to: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers: List-Unsubscribe, List-Unsubscribe-Post, X-Notification-Id."""
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundSms:
    notification_id: str
    to_number: str
    body: str
    status_callback: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    provider_message_id: str


class SendError(Exception):
    def __init__(self, failure: SendFailure) -> None:
        super().__init__(f"{failure.kind.value}: {failure.code} {failure.message}")
        self.failure = failure


class Uncertain(Exception):
    """Raised inside a guarded call when the provider may have accepted the message (the line
    dropped after it was handed over). `retryable` tells the guard whether to try again at once
    (SMTP: the copy carries the same Message-ID) or leave it to the queue."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Sender(Protocol):
    name: str
    channel: Channel
    sessions: bool
    """True when several messages go over one connection in one call (SMTP)."""

    async def send(self, message: OutboundEmail | OutboundSms) -> Accepted: ...

    async def send_many(
        self, messages: Sequence[OutboundEmail | OutboundSms]
    ) -> list[Accepted | SendFailure]:
        """Each message's outcome, in order (one guarded call per message, or per session
        where the provider works in sessions)."""
        ...

    async def close(self) -> None: ...


async def send_each(
    sender: Sender, messages: Sequence[OutboundEmail | OutboundSms]
) -> list[Accepted | SendFailure]:
    """`send_many` for providers that take one message per request."""

    async def one(message: OutboundEmail | OutboundSms) -> Accepted | SendFailure:
        try:
            return await sender.send(message)
        except SendError as exc:
            return exc.failure

    return list(await asyncio.gather(*(one(m) for m in messages)))


def guard_failure(exc: MeshError, *, uncertain: bool = False) -> SendFailure:
    """A TRANSIENT (or, when the last attempt's outcome was unknown, UNKNOWN) failure for the
    guard's own refusal or give-up."""
    if isinstance(exc, CircuitOpen):
        code = "circuit_open"
    elif isinstance(exc, RateLimited | ProviderThrottled):
        code = "rate_limited"
    elif isinstance(exc, ProviderDeadlineExceeded):
        code = "deadline"
    else:
        code = exc.reason.lower()
    kind = FailureKind.UNKNOWN if uncertain else FailureKind.TRANSIENT
    return SendFailure(kind, code, exc.message[:300], retry_after=exc.retry_after)
