"""One-click unsubscribe tokens (RFC 8058): unguessable, tamper-proof, and without personal data.

A token names the notification it came with (16 bytes) and carries an HMAC-SHA256 of it under
the service's secret (16 bytes kept): `base64url(id || mac)`, 43 characters. The link therefore
works without a login and reveals nothing (the address stays in our database); a forged or
altered token is refused. What an unsubscribe does follows from the notification: its user (or,
for a guest, its address), its channel and its category.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid

_CONTEXT = b"tickettoken.notify.unsubscribe.v1:"
_MAC_BYTES = 16


def _mac(secret: bytes, notification_id: uuid.UUID) -> bytes:
    return hmac.new(secret, _CONTEXT + notification_id.bytes, hashlib.sha256).digest()[:_MAC_BYTES]


def token_for(secret: bytes, notification_id: uuid.UUID) -> str:
    raw = notification_id.bytes + _mac(secret, notification_id)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def verify(secret: bytes, token: str) -> uuid.UUID | None:
    """The notification id a genuine token names, or None."""
    if not token or len(token) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 16 + _MAC_BYTES:
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token:
        return None  # a non-canonical spelling (unused low bits set): one token per notification
    notification_id = uuid.UUID(bytes=raw[:16])
    if not hmac.compare_digest(raw[16:], _mac(secret, notification_id)):
        return None
    return notification_id
