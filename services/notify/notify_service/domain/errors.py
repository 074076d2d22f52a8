"""The notify service's errors: a small typed hierarchy, with no transport in it.

Use cases raise these; `api/errors.py` (the service's error map, registered with the kit) is the
one place that turns them into gRPC statuses. The base class says what kind of answer it is:

  InvalidInput  the request, as sent, breaks a rule the contract cannot state (field paths)
  NotFound      the thing asked for does not exist (or the caller may not know it does)
  Forbidden     the caller may not do this
  Refused       the system is not in a state where this can succeed as asked
  TryLater      a transient condition: the same request may succeed later
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field: its path in the request (`variables["venue"]`) and what is wrong."""

    field: str
    description: str


class NotifyError(Exception):
    """Base of every error the notify service means a client to see."""

    reason: ClassVar[str] = "NOTIFY_ERROR"
    """Stable machine-readable cause (google.rpc.ErrorInfo.reason)."""

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after


class InvalidInput(NotifyError):
    reason = "INVALID_REQUEST"

    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__(
            "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in violations)
        )
        self.violations = tuple(violations)


def raise_if(violations: Sequence[Violation]) -> None:
    if violations:
        raise InvalidInput(violations)


class UnknownTemplate(InvalidInput):
    """SendNotification names a template that does not exist: bad input, nothing queued."""

    reason = "TEMPLATE_NOT_FOUND"

    def __init__(self, field: str = "template_id") -> None:
        super().__init__([Violation(field, "no such template")])


class MissingVariables(InvalidInput):
    """Required template variables were not given (each is a field violation)."""

    reason = "TEMPLATE_VARIABLES_MISSING"

    def __init__(self, names: Sequence[str], field: str = "variables") -> None:
        super().__init__([Violation(f'{field}["{n}"]', "required by the template") for n in names])
        self.names = tuple(names)


class TemplateBroken(InvalidInput):
    """A template does not compile or render (syntax, sandbox, undefined variable)."""

    reason = "TEMPLATE_INVALID"


class BadAddress(InvalidInput):
    reason = "INVALID_DESTINATION"


class WebhookUnverified(InvalidInput):
    """A delivery receipt that is forged, stale or malformed: refused, changes nothing."""

    reason = "WEBHOOK_SIGNATURE_INVALID"


class WebhookStale(WebhookUnverified):
    reason = "WEBHOOK_STALE"


class NotFound(NotifyError):
    reason = "NOT_FOUND"


class NotificationNotFound(NotFound):
    reason = "NOTIFICATION_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("no such notification")


class TemplateNotFound(NotFound):
    reason = "TEMPLATE_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("no such template (or version, or locale)")


class Forbidden(NotifyError):
    reason = "PERMISSION_DENIED"


class NotYours(Forbidden):
    reason = "NOT_YOUR_PREFERENCES"

    def __init__(self, what: str = "preferences") -> None:
        super().__init__(f"buyers can only read or change their own {what}")


class Refused(NotifyError):
    reason = "FAILED_PRECONDITION"


class ChannelNotConfigured(Refused):
    reason = "CHANNEL_NOT_CONFIGURED"

    def __init__(self, channel: str) -> None:
        super().__init__(
            f"no provider is configured for {channel}; nothing was queued",
            metadata={"channel": channel},
        )


class ProviderNotConfigured(Refused):
    reason = "PROVIDER_NOT_CONFIGURED"

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"{provider} is not configured here: its receipts cannot be verified",
            metadata={"provider": provider},
        )


class TemplateVersionMismatch(Refused):
    reason = "TEMPLATE_VERSION_MISMATCH"

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"the template is at version {current}, not {expected}",
            metadata={"expected_version": str(expected), "current_version": str(current)},
        )


class TemplateChannelMismatch(Refused):
    reason = "TEMPLATE_CHANNEL_MISMATCH"

    def __init__(self, existing: str) -> None:
        super().__init__(
            f"this template id is written for {existing}; use another id for another channel",
            metadata={"channel": existing},
        )


class TryLater(NotifyError):
    reason = "UNAVAILABLE"


class DedupRace(TryLater):
    """The dedup key's holder expired while this request looked at it; retry the request."""

    reason = "DEDUP_RACE"

    def __init__(self) -> None:
        super().__init__("the deduplication key changed hands; retry", retry_after=0.1)


class WebhookNotProcessed(TryLater):
    """Processing a verified receipt failed and changed nothing; the provider retries."""

    reason = "WEBHOOK_PROCESSING_FAILED"

    def __init__(self) -> None:
        super().__init__("the receipt could not be processed; retry", retry_after=5.0)
