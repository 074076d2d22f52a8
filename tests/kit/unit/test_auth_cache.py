"""The verified-token cache (keyed by the whole authorization header) never outlives a token."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meshdev.testing.servers import TestTokens
from meshkit.auth import Authenticator, ensure_dev_keys, load_public_keys
from meshkit.errors import Unauthenticated
from meshkit.settings import DEV_ISSUER

AUD = "tickettoken.t"


def authenticator(dev_dir: Path, leeway: int = 30) -> Authenticator:
    dev = ensure_dev_keys(dev_dir)
    return Authenticator(
        load_public_keys(f"{dev.kid}={dev.public_key_path}"),
        issuers=[DEV_ISSUER],
        audience=AUD,
        leeway=leeway,
    )


def test_cached_token_is_rejected_once_expired(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, leeway=0)
    header = f"Bearer {TestTokens(tmp_path).user('u-1', ['admin'], aud=AUD, ttl=1)}"
    first = auth.authenticate(header)
    assert auth.authenticate(header) is first  # served from the cache
    time.sleep(2.1)  # exp has whole-second resolution
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(header)
    assert info.value.reason == "TOKEN_EXPIRED"


def test_scheme_is_checked_for_headers_not_in_the_cache(tmp_path: Path) -> None:
    auth = authenticator(tmp_path)
    token = TestTokens(tmp_path).user("u-1", ["admin"], aud=AUD)
    auth.authenticate(f"Bearer {token}")
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(f"Basic {token}")
    assert info.value.reason == "TOKEN_MALFORMED"
