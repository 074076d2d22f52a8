"""OAuth authorizations in flight, in Redis: one key per state (its SHA-256, never the state),
holding what StartOAuth bound it to. A key outlives its state's TTL by a grace period so that a
late completion is told "expired", and a completed state is replaced by a tombstone (kept as
long) so that a replay is told "already used"; an unknown key was never issued here.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from integration_service.domain.errors import OAuthStateBusy
from integration_service.domain.oauth import PendingAuthorization, state_key

USED = "used"
GRACE_S = 3600.0

# Replace the pending value with the tombstone only if it is still that value: one completion.
_CONSUME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


class OAuthStates:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._consume = redis.register_script(_CONSUME)

    def _key(self, state: str) -> str:
        return f"{self._prefix}:oauth-state:{state_key(state)}"

    async def put(self, state: str, pending: PendingAuthorization) -> None:
        ttl_ms = int((pending.expires_at - time.time() + GRACE_S) * 1000)
        try:
            await self._redis.set(self._key(state), pending.to_json(), px=ttl_ms, nx=True)
        except RedisError:
            raise OAuthStateBusy() from None

    async def peek(self, state: str) -> tuple[str, PendingAuthorization | None]:
        """("unknown" | "used" | "pending", the pending authorization)."""
        try:
            raw = await self._redis.get(self._key(state))
        except RedisError:
            raise OAuthStateBusy() from None
        if raw is None:
            return "unknown", None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if text == USED:
            return "used", None
        return "pending", PendingAuthorization.from_json(text)

    async def consume(self, state: str, pending: PendingAuthorization) -> bool:
        """True for the one caller that completes it."""
        try:
            done = await self._consume(keys=[self._key(state)], args=[pending.to_json(), USED])
        except RedisError:
            raise OAuthStateBusy() from None
        return bool(done)
