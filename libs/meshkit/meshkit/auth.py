"""JWT authentication, per-service authorization policy, and service tokens for outbound calls.

Tokens are `authorization: Bearer <JWT>` metadata, RS256/ES256 only (an explicit allow-list: `none`
and HMAC algorithms are refused before any key is touched), checked for `iss`, this service's
`aud`, `exp`/`nbf` with a small leeway, and verified with the public key named by `kid`.
Verified tokens are cached until they expire, so a caller that reuses its token pays for the
signature check once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshkit.context import Principal
from meshkit.errors import PermissionDenied, Unauthenticated
from meshkit.files import create_once

ALLOWED_ALGORITHMS = ("RS256", "ES256")
USER_ROLES = frozenset({"buyer", "venue_admin", "admin"})

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call one RPC: users with any of `roles`, services named in `services`, or anyone
    (`public`, no token needed — only for health-like methods)."""

    roles: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    public: bool = False

    def allows(self, principal: Principal) -> bool:
        if self.public:
            return True
        subject = principal.subject
        if subject.startswith("svc:"):
            return subject[4:] in self.services
        return not self.roles.isdisjoint(principal.roles)


def allow(*roles: str, services: Iterable[str] = ()) -> Rule:
    """`allow("buyer", "admin", services=["payment"])` — a policy table entry."""
    unknown = set(roles) - USER_ROLES
    if unknown:
        raise ValueError(f"unknown roles in policy: {sorted(unknown)}")
    return Rule(roles=frozenset(roles), services=frozenset(services))


PUBLIC = Rule(public=True)

Policy = Mapping[str, Rule]
"""Method name (e.g. "CreatePayment") → Rule. Methods missing from the table are denied."""


# --------------------------------------------------------------------------------------------
# Keys


def load_public_keys(spec: str) -> dict[str, PublicKey]:
    """`kid=path.pem,kid2=path2.pem` or a JWKS file path → {kid: public key}."""
    keys: dict[str, PublicKey] = {}
    spec = spec.strip()
    if not spec:
        return keys
    if spec.endswith(".json") and "=" not in spec:
        data = json.loads(Path(spec).read_text())
        for jwk in data.get("keys", []):
            key = jwt.PyJWK(jwk).key
            if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                raise ValueError(f"JWKS key {jwk.get('kid')!r} is not an RSA/EC public key")
            keys[str(jwk["kid"])] = key
        return keys
    for entry in spec.split(","):
        kid, sep, path = entry.strip().partition("=")
        if not sep or not kid or not path:
            raise ValueError(f"JWT_PUBLIC_KEYS entry {entry!r} is not kid=path")
        loaded = serialization.load_pem_public_key(Path(path).read_bytes())
        if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"key {kid!r} is not an RSA or EC public key")
        keys[kid] = loaded
    return keys


def load_private_key(path: str | Path) -> PrivateKey:
    loaded = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an RSA or EC private key")
    return loaded


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) else "ES256"


@dataclass(frozen=True, slots=True)
class DevKeys:
    """The dev key pair (generated once per checkout under DEV_DIR/jwt)."""

    kid: str
    private_key_path: Path
    public_key_path: Path


def ensure_dev_keys(dev_dir: Path) -> DevKeys:
    """Create (once, race-free across processes) and return the dev ES256 key pair."""
    folder = dev_dir / "jwt"
    folder.mkdir(parents=True, exist_ok=True)
    private_path = folder / "dev-signing.pem"
    public_path = folder / "dev-signing.pub.pem"
    if not private_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_once(private_path, pem)  # another process may win the race: theirs is kept
    if not public_path.exists():
        pub = (
            load_private_key(private_path)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        tmp = folder / f".dev-signing-pub.{os.getpid()}.tmp"
        tmp.write_bytes(pub)
        tmp.replace(public_path)
    return DevKeys(kid="dev-1", private_key_path=private_path, public_key_path=public_path)


# --------------------------------------------------------------------------------------------
# Verification


class Authenticator:
    """Verifies bearer tokens for one audience and caches verified principals until expiry."""

    def __init__(
        self,
        keys: Mapping[str, PublicKey],
        *,
        issuers: Iterable[str],
        audience: str,
        leeway: int = 30,
        cache_size: int = 10_000,
    ) -> None:
        if not keys:
            raise ValueError("no JWT verification keys configured")
        self._keys = dict(keys)
        self._issuers = list(issuers)
        self.audience = audience
        self._leeway = leeway
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._cache_size = cache_size

    def authenticate(self, authorization: str | None) -> Principal:
        """Principal for an `authorization` metadata value, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated("missing bearer token", reason="TOKEN_MISSING")
        # Cached by the whole header value: a hit costs one dict lookup and a clock read.
        cached = self._cache.get(authorization)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires + self._leeway:
                return principal
            del self._cache[authorization]
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be 'Bearer <JWT>'", reason="TOKEN_MALFORMED")
        principal, expires = self._verify(token)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[authorization] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("token is not a JWT", reason="TOKEN_MALFORMED") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise Unauthenticated(
                f"token algorithm {alg!r} is not allowed", reason="TOKEN_ALGORITHM_REJECTED"
            )
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise Unauthenticated("token key id is unknown", reason="TOKEN_KEY_UNKNOWN")
        if algorithm_for(key) != alg:
            raise Unauthenticated(
                "token algorithm does not match its key", reason="TOKEN_ALGORITHM_REJECTED"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self._issuers,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token is not yet valid", reason="TOKEN_NOT_YET_VALID") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is wrong", reason="TOKEN_AUDIENCE") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not trusted", reason="TOKEN_ISSUER") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid", reason="TOKEN_SIGNATURE") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"token rejected: {exc}", reason="TOKEN_INVALID") from None
        subject = str(claims["sub"])
        raw_roles = claims.get("roles", [])
        roles = frozenset(str(r) for r in raw_roles) if isinstance(raw_roles, list) else frozenset()
        principal = Principal(subject=subject, roles=roles, claims=claims)
        return principal, float(claims["exp"])


def authorize(principal: Principal, rule: Rule | None, method: str) -> None:
    """PermissionDenied unless the policy rule admits the principal (no rule → denied)."""
    if rule is None or not rule.allows(principal):
        raise PermissionDenied(
            f"{principal.subject} may not call {method}",
            reason="PERMISSION_DENIED",
            metadata={"method": method},
        )


# --------------------------------------------------------------------------------------------
# Minting


class TokenMinter:
    """Signs JWTs with one private key: service tokens for outbound calls, and dev user tokens."""

    def __init__(self, private_key: PrivateKey, *, kid: str, issuer: str) -> None:
        self._key = private_key
        self._alg = algorithm_for(private_key)
        self.kid = kid
        self.issuer = issuer
        self._service_cache: dict[tuple[str, str], tuple[str, float]] = {}

    def mint(
        self,
        *,
        subject: str,
        audience: str,
        ttl: float = 300.0,
        roles: Iterable[str] = (),
        extra: Mapping[str, Any] | None = None,
        not_before: float | None = None,
    ) -> str:
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": int(now),
            "nbf": int(not_before if not_before is not None else now),
            "exp": int(now + ttl),
        }
        if roles:
            claims["roles"] = list(roles)
        if extra:
            claims.update(extra)
        return jwt.encode(claims, self._key, algorithm=self._alg, headers={"kid": self.kid})

    def service_token(self, service: str, audience: str, ttl: float = 60.0) -> str:
        """A short-lived `svc:<service>` token for `audience`, reused until 80% of its life."""
        cache_key = (service, audience)
        cached = self._service_cache.get(cache_key)
        now = time.time()
        if cached is not None and now < cached[1]:
            return cached[0]
        token = self.mint(subject=f"svc:{service}", audience=audience, ttl=ttl)
        self._service_cache[cache_key] = (token, now + ttl * 0.8)
        return token
