"""The service's own public links (a shared step): one-click unsubscribe, Twilio status
callbacks. The base is the public URL of the HTTP port (NOTIFY_PUBLIC_BASE_URL, or in dev this
process's bound port, hence a function)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from notify_service.domain import unsubscribe

UNSUBSCRIBE_PATH = "/unsubscribe"
SENDGRID_PATH = "/webhooks/sendgrid"
TWILIO_STATUS_PATH = "/webhooks/twilio/status"
TWILIO_INBOUND_PATH = "/webhooks/twilio/inbound"


class Links:
    def __init__(self, *, secret: bytes, public_base: Callable[[], str]) -> None:
        self._secret = secret
        self._base = public_base

    @property
    def secret(self) -> bytes:
        return self._secret

    def base(self) -> str:
        return self._base().rstrip("/")

    def unsubscribe_url(self, notification_id: uuid.UUID) -> str:
        token = unsubscribe.token_for(self._secret, notification_id)
        return f"{self.base()}{UNSUBSCRIBE_PATH}/{token}"

    def twilio_status_url(self, notification_id: uuid.UUID) -> str:
        return f"{self.base()}{TWILIO_STATUS_PATH}?notification_id={notification_id}"

    def verify(self, token: str) -> uuid.UUID | None:
        return unsubscribe.verify(self._secret, token)
