"""OAuth authorizations in flight: the state (random, single-use, bound to venue, provider,
redirect URI and caller, short-lived) and PKCE (RFC 7636, S256).

The state is 256 random bits, base64url; it is stored (with the PKCE verifier) keyed by its
SHA-256, so the store never holds a value that completes an authorization by itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from integration_service.domain.model import Provider

STATE_BYTES = 32
VERIFIER_BYTES = 48  # 64 base64url characters: within RFC 7636's 43..128


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_state() -> str:
    return _b64url(secrets.token_bytes(STATE_BYTES))


def state_key(state: str) -> str:
    """The state's storage key: its SHA-256 (hex)."""
    return hashlib.sha256(state.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str
    method: str = "S256"


def pkce_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_pkce() -> Pkce:
    verifier = _b64url(secrets.token_bytes(VERIFIER_BYTES))
    return Pkce(verifier, pkce_challenge(verifier))


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """What StartOAuth stored under a state: everything CompleteOAuth needs, and what the state
    is bound to."""

    venue_id: str
    provider: Provider
    redirect_uri: str
    scopes: tuple[str, ...]
    principal: str
    """The caller who started it; only they (or an admin) may complete it."""
    code_verifier: str
    """PKCE verifier ("" when the provider has no PKCE)."""
    issued_at: float
    expires_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "venue_id": self.venue_id,
                "provider": self.provider.value,
                "redirect_uri": self.redirect_uri,
                "scopes": list(self.scopes),
                "principal": self.principal,
                "code_verifier": self.code_verifier,
                "issued_at": self.issued_at,
                "expires_at": self.expires_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PendingAuthorization:
        data = json.loads(text)
        return cls(
            venue_id=str(data["venue_id"]),
            provider=Provider(data["provider"]),
            redirect_uri=str(data["redirect_uri"]),
            scopes=tuple(str(s) for s in data["scopes"]),
            principal=str(data["principal"]),
            code_verifier=str(data["code_verifier"]),
            issued_at=float(data["issued_at"]),
            expires_at=float(data["expires_at"]),
        )


def redirect_allowed(uri: str, allowed: Sequence[str]) -> bool:
    """Exact match against the allow-list (scheme, host, port and path; no query or fragment
    on an allowed entry means none may be added), as OAuth 2.1 requires of redirect URIs."""
    parts = urlsplit(uri)
    if parts.fragment or parts.scheme not in ("https", "http") or not parts.hostname:
        return False
    return uri in allowed
