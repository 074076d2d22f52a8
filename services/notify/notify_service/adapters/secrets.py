"""The unsubscribe-token secret: from settings, or (outside production) a dev secret generated
once under DEV_DIR/notify and reused, so links in dev mail keep working across restarts. In
production without email (no link is ever issued) a throwaway secret refuses every token."""

from __future__ import annotations

import os
import secrets

from notify_service.settings import NotifySettings


def load_unsubscribe_secret(settings: NotifySettings) -> bytes:
    configured = settings.notify_unsubscribe_secret.get_secret_value()
    if configured:
        return configured.encode()
    if settings.is_production:
        # Only when no email provider is configured (production settings refuse it otherwise):
        # no link is ever issued, so every presented token is refused.
        return secrets.token_bytes(32)
    path = settings.unsubscribe_key_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of the mesh made it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_urlsafe(48).encode())
    return path.read_bytes().strip()
