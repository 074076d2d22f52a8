"""Idempotent execution of mutating RPCs, backed by the service's `idempotency_keys` table.

The rule (DESIGN.md, after Stripe): a key is unique per (scope = RPC method, principal = caller).

* new key → a STARTED row with our lock token is committed *before* the handler runs, so a
  concurrent duplicate sees it; the handler's response is then stored (COMPLETED) and its
  deterministic bytes are what every replay returns, byte for byte;
* same key, same request (sha256 of its deterministic serialization), COMPLETED → stored bytes,
  handler not run; FAILED → the stored `google.rpc.Status` raised again (`ReplayedError`);
* same key, different request → FAILED_PRECONDITION `IDEMPOTENCY_KEY_REUSED`;
* STARTED with a live lock → ABORTED `IDEMPOTENCY_REQUEST_IN_PROGRESS` with RetryInfo (retry
  within a heartbeat: by then the holder has usually finished, or been found dead);
* STARTED whose holder stopped heart-beating (it died) → taken over atomically by exactly one
  caller;
* a final error (the request cannot succeed as sent) is stored and replayed; anything else
  (retryable codes, bugs, cancellation, and a final code that carries RetryInfo: the service
  says the same request may succeed later, e.g. NOT_FOUND for a thing that is on its way)
  deletes our row so the client's retry runs again.

While the handler runs, a heartbeat refreshes `locked_at` every `heartbeat_interval` seconds, so the
lock timeout measures how long ago the holder was last seen alive, not how long the handler may
take: a slow provider call is never run twice, and a crashed holder's key is free again at most
`lock_timeout` seconds (5 by default) after its last heartbeat. The holder fences itself: when a
heartbeat finds the key taken by another caller, or no heartbeat has succeeded for so long that
the lock may have lapsed (the database unreachable, the event loop stalled), the handler is
cancelled and the call answers ABORTED with RetryInfo, rather than run on beside a new holder.
(Provider calls carry keys derived from ours, so work the old holder had already sent is
answered, not repeated, when the new holder sends it again.)

Rows expire after `ttl` (24 h by default; expired rows count as absent) and `purge_expired` —
run periodically by the service — deletes them.

A servicer marks its mutating methods with `@idempotent` and returns response messages; the kit's
call layer runs them through the store (see meshkit.interceptor). A method whose request has an
`idempotency_key` but no mark is refused when the service starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from prometheus_client import CollectorRegistry, Counter

from meshkit.context import current_call, current_request_id
from meshkit.db import Database
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MeshError,
    ReplayedError,
    status_for,
)

__all__ = [
    "FINAL_CODES",
    "KEY_FIELD",
    "MAX_KEY_LENGTH",
    "REASON_IN_PROGRESS",
    "REASON_KEY_REUSED",
    "IdempotencyStore",
    "idempotent",
    "is_idempotent",
    "request_fingerprint",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_MARK = "__meshkit_idempotent__"


def idempotent(method: F) -> F:
    """Mark a servicer method as idempotent: the kit runs it at most once per (caller, RPC,
    request.idempotency_key) and replays its first answer (response or final error)."""
    setattr(method, _MARK, True)
    return method


def is_idempotent(handler: Callable[..., Any]) -> bool:
    """Whether `handler` (a function or a bound servicer method) carries the mark."""
    return bool(getattr(handler, _MARK, False))


logger = logging.getLogger(__name__)

KEY_FIELD = "idempotency_key"
MAX_KEY_LENGTH = 255
REASON_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
REASON_IN_PROGRESS = "IDEMPOTENCY_REQUEST_IN_PROGRESS"
REASON_LOCK_LOST = "IDEMPOTENCY_LOCK_LOST"
MIN_RETRY_AFTER = 0.5

# Codes that mean "this request, as sent, will never succeed": replaying them is the truthful
# answer. Every other outcome may differ on a retry (the input was rejected before any work, a
# dependency was down, a conflict, a bug), so those release the key instead of pinning it.
FINAL_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

# One statement claims the key: insert it, or take over a row that is expired (unless its holder
# is demonstrably alive) or whose holder stopped heart-beating while running this same request.
# ON CONFLICT locks the conflicting row even when the WHERE is false, so exactly one of many
# concurrent callers can win a takeover, and the follow-up SELECT in the same transaction sees
# the row as it stands after the winner's commit.
_CLAIM_SQL = """
INSERT INTO idempotency_keys AS k
    (scope, principal, key, fingerprint, state, lock_token, locked_at, request_id, expires_at)
VALUES ($1, $2, $3, $4, 'STARTED', $5, now(), $6, now() + make_interval(secs => $7))
ON CONFLICT (scope, principal, key) DO UPDATE SET
    fingerprint = EXCLUDED.fingerprint,
    state = 'STARTED',
    lock_token = EXCLUDED.lock_token,
    locked_at = now(),
    response = NULL,
    error_status = NULL,
    request_id = EXCLUDED.request_id,
    created_at = CASE WHEN k.expires_at < now() THEN now() ELSE k.created_at END,
    updated_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE (k.expires_at < now()
       AND NOT (k.state = 'STARTED' AND k.locked_at > now() - make_interval(secs => $8)))
   OR (k.state = 'STARTED'
       AND k.fingerprint = EXCLUDED.fingerprint
       AND k.locked_at <= now() - make_interval(secs => $8))
RETURNING (xmax = 0) AS inserted, k.created_at < now() AS held
"""

_EXISTING_SQL = """
SELECT state, fingerprint, response, error_status,
       extract(epoch FROM locked_at + make_interval(secs => $4) - now())::float8 AS lock_left
FROM idempotency_keys
WHERE scope = $1 AND principal = $2 AND key = $3
"""

_COMPLETE_SQL = """
UPDATE idempotency_keys
SET state = 'COMPLETED', response = $5, lock_token = NULL, locked_at = NULL, updated_at = now()
WHERE scope = $1 AND principal = $2 AND key = $3 AND lock_token = $4 AND state = 'STARTED'
"""

_FAIL_SQL = """
UPDATE idempotency_keys
SET state = 'FAILED', error_status = $5, lock_token = NULL, locked_at = NULL, updated_at = now()
WHERE scope = $1 AND principal = $2 AND key = $3 AND lock_token = $4 AND state = 'STARTED'
"""

_RELEASE_SQL = """
DELETE FROM idempotency_keys
WHERE scope = $1 AND principal = $2 AND key = $3 AND lock_token = $4 AND state = 'STARTED'
"""

_HEARTBEAT_SQL = """
UPDATE idempotency_keys SET locked_at = now()
WHERE scope = $1 AND principal = $2 AND key = $3 AND lock_token = $4 AND state = 'STARTED'
"""

# Expired rows, plus STARTED rows that are both expired and abandoned (their holder's lock
# lapsed): nobody can be running those, and leaving them would keep them forever.
_PURGE_SQL = """
WITH doomed AS (
    SELECT scope, principal, key FROM idempotency_keys
    WHERE expires_at < now()
      AND (state <> 'STARTED' OR locked_at < now() - make_interval(secs => $2))
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM idempotency_keys k
USING doomed d
WHERE k.scope = d.scope AND k.principal = d.principal AND k.key = d.key
"""


def request_fingerprint(request: Message) -> bytes:
    """sha256 of the request's deterministic serialization (the key field included)."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


@dataclass(frozen=True, slots=True)
class _Ident:
    scope: str
    principal: str
    key: str

    def args(self) -> tuple[str, str, str]:
        return self.scope, self.principal, self.key

    def log(self, **fields: object) -> dict[str, object]:
        # Key and scope identify the operation; request bodies are never logged.
        return {
            "idempotency_scope": self.scope,
            "idempotency_principal": self.principal,
            "idempotency_key": self.key,
            **fields,
        }


class _Fence:
    """Set when the heartbeat stops the handler because the lock is (or may be) gone."""

    __slots__ = ("tripped",)

    def __init__(self) -> None:
        self.tripped = False


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 1" / "DELETE 0".
    return int(status.rsplit(" ", 1)[-1])


class IdempotencyStore:
    """Runs handlers at most once per (scope, principal, key); see the module docstring.

    Build one per service at start-up and pass it to the servicer.
    """

    def __init__(
        self,
        db: Database,
        *,
        domain: str,
        lock_timeout: float = 5.0,
        ttl: float = 86400.0,
        heartbeat_interval: float | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if lock_timeout <= 0 or ttl <= lock_timeout:
            raise ValueError("need 0 < lock_timeout < ttl")
        # Several beats per lock period: one or two missed beats (a slow query, a busy loop)
        # never make a live holder look dead.
        beat = heartbeat_interval if heartbeat_interval is not None else min(1.0, lock_timeout / 5)
        if not 0 < beat <= lock_timeout / 3:
            raise ValueError("need 0 < heartbeat_interval <= lock_timeout / 3")
        self._db = db
        self.domain = domain
        self.lock_timeout = lock_timeout
        self.ttl = ttl
        self.heartbeat_interval = beat
        # A takeover means a holder died mid-request (reason "lock"), or a key was used again
        # after its row expired but before the purge deleted it (reason "expired").
        self._takeovers = Counter(
            "idempotency_lock_takeovers",
            "Idempotency keys claimed over an existing row: reason lock = its holder stopped "
            "heart-beating (died mid-request), expired = the row had expired.",
            ["reason"],
            registry=registry,
        )
        for reason in ("lock", "expired"):
            self._takeovers.labels(reason)

    async def run(
        self,
        request: Message,
        handler: Callable[[], Awaitable[Message]],
        *,
        key: str | None = None,
        scope: str | None = None,
        principal: str | None = None,
    ) -> bytes:
        """Run `handler` once for this key and return the deterministic bytes of its response.

        `key` defaults to `request.idempotency_key`, `scope` to the current RPC's method and
        `principal` to the current caller's subject (from `meshkit.context`).
        """
        ident = self._identify(request, key, scope, principal)
        fingerprint = request_fingerprint(request)
        token = uuid.uuid4()

        replay = await self._claim(ident, fingerprint, token)
        if replay is not None:
            return replay

        try:
            result = await self._run_with_heartbeat(handler, ident, token)
        except BaseException as exc:
            # Shielded: a second cancellation must not leave a half-recorded outcome behind.
            try:
                await asyncio.shield(self._record_failure(ident, token, exc))
            except Exception:
                logger.exception(
                    "could not record idempotent handler failure; the key frees itself when "
                    "its lock expires",
                    extra=ident.log(),
                )
            raise

        response = result.SerializeToString(deterministic=True)
        await asyncio.shield(self._complete(ident, token, response))
        return response

    # -- phases ---------------------------------------------------------------------------------

    def _identify(
        self, request: Message, key: str | None, scope: str | None, principal: str | None
    ) -> _Ident:
        call = current_call()
        if key is None:
            if KEY_FIELD not in request.DESCRIPTOR.fields_by_name:
                raise TypeError(
                    f"{request.DESCRIPTOR.full_name} has no {KEY_FIELD} field; pass key="
                )
            key = str(getattr(request, KEY_FIELD))
        if scope is None:
            if call is None:
                raise RuntimeError("IdempotencyStore.run outside an RPC needs scope=")
            scope = call.method
        if principal is None:
            if call is None:
                raise RuntimeError("IdempotencyStore.run outside an RPC needs principal=")
            principal = call.principal.subject
        if not key:
            raise InvalidArgument(
                f"{KEY_FIELD} is required",
                field_violations=[
                    FieldViolation(KEY_FIELD, "required: a client-generated unique id (UUID)")
                ],
            )
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidArgument(
                f"{KEY_FIELD} is too long",
                field_violations=[
                    FieldViolation(KEY_FIELD, f"at most {MAX_KEY_LENGTH} characters")
                ],
            )
        return _Ident(scope, principal, key)

    async def _claim(self, ident: _Ident, fingerprint: bytes, token: uuid.UUID) -> bytes | None:
        """Own the key (→ None) or settle the call from the existing row (→ bytes / raise)."""
        async with self._db.transaction() as conn:
            claimed = await conn.fetchrow(
                _CLAIM_SQL,
                *ident.args(),
                fingerprint,
                token,
                current_request_id(),
                self.ttl,
                self.lock_timeout,
            )
            if claimed is not None:
                if not claimed["inserted"]:
                    self._takeovers.labels("lock" if claimed["held"] else "expired").inc()
                    logger.warning(
                        "idempotency key taken over from an expired holder or window",
                        extra=ident.log(),
                    )
                return None
            row = await conn.fetchrow(_EXISTING_SQL, *ident.args(), self.lock_timeout)

        if row is None:  # pragma: no cover - the row is locked by our own transaction
            raise Aborted("idempotency key changed concurrently", retry_after=MIN_RETRY_AFTER)
        if bytes(row["fingerprint"]) != fingerprint:
            logger.info("idempotency key reused for another request", extra=ident.log())
            raise FailedPrecondition(
                f"{KEY_FIELD} was already used for a different request",
                reason=REASON_KEY_REUSED,
            )
        state = row["state"]
        if state == "COMPLETED":
            logger.info("idempotent replay", extra=ident.log(idempotency_state=state))
            return bytes(row["response"])
        if state == "FAILED":
            logger.info("idempotent replay", extra=ident.log(idempotency_state=state))
            raise ReplayedError(status_pb2.Status.FromString(bytes(row["error_status"])))
        # Retry within a heartbeat: a live holder has usually finished by then, and a dead one's
        # lock runs out at most lock_timeout after its last beat.
        lock_left = float(row["lock_left"] or 0.0)
        retry_after = max(MIN_RETRY_AFTER, min(lock_left, self.heartbeat_interval))
        raise Aborted(
            "a request with this idempotency key is still in progress; retry later",
            reason=REASON_IN_PROGRESS,
            retry_after=retry_after,
        )

    async def _run_with_heartbeat(
        self,
        handler: Callable[[], Awaitable[Message]],
        ident: _Ident,
        token: uuid.UUID,
    ) -> Message:
        holder = asyncio.current_task()
        fence = _Fence()
        beat = asyncio.create_task(self._heartbeat(ident, token, holder, fence))
        try:
            return await handler()
        except asyncio.CancelledError:
            if not fence.tripped or holder is None:
                raise
            # We cancelled ourselves (see `_heartbeat`): answer ABORTED, not CANCELLED.
            holder.uncancel()
            raise Aborted(
                "this request lost its idempotency lock while it ran; retry it",
                reason=REASON_LOCK_LOST,
                retry_after=self.heartbeat_interval,
            ) from None
        finally:
            # Not awaited: awaiting here could swallow a cancellation aimed at us.
            beat.cancel()

    async def _heartbeat(
        self,
        ident: _Ident,
        token: uuid.UUID,
        holder: asyncio.Task[Any] | None,
        fence: _Fence,
    ) -> None:
        loop = asyncio.get_running_loop()
        last_seen = loop.time()  # the claim itself set locked_at
        # Past this, another caller may already have found our lock expired.
        unsafe_after = self.lock_timeout - self.heartbeat_interval
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            lost = False
            try:
                status = await asyncio.wait_for(
                    self._db.execute(_HEARTBEAT_SQL, *ident.args(), token),
                    timeout=self.heartbeat_interval,
                )
            except Exception:
                # A missed beat only shortens the lock; the next one may succeed.
                logger.warning(
                    "idempotency lock heartbeat failed", extra=ident.log(), exc_info=True
                )
                lost = loop.time() - last_seen > unsafe_after
            else:
                if _rowcount(status) == 0:
                    lost = True
                else:
                    last_seen = loop.time()
            if lost:
                logger.error(
                    "idempotency lock lost while the handler runs; stopping the handler",
                    extra=ident.log(),
                )
                fence.tripped = True
                if holder is not None:
                    holder.cancel()
                return

    async def _complete(self, ident: _Ident, token: uuid.UUID, response: bytes) -> None:
        status = await self._db.execute(_COMPLETE_SQL, *ident.args(), token, response)
        if _rowcount(status) == 0:
            logger.warning(
                "idempotency lock lost before completion; response not stored",
                extra=ident.log(),
            )

    async def _record_failure(self, ident: _Ident, token: uuid.UUID, exc: BaseException) -> None:
        if isinstance(exc, MeshError) and exc.code in FINAL_CODES and exc.retry_after is None:
            status = status_for(exc, self.domain).SerializeToString(deterministic=True)
            tag = await self._db.execute(_FAIL_SQL, *ident.args(), token, status)
            outcome = "stored"
        else:
            tag = await self._db.execute(_RELEASE_SQL, *ident.args(), token)
            outcome = "released"
        code = exc.code.name if isinstance(exc, MeshError) else type(exc).__name__
        if _rowcount(tag) == 0:
            logger.warning(
                "idempotency lock lost before the failure was recorded",
                extra=ident.log(idempotency_outcome=outcome, error=code),
            )
        else:
            logger.info(
                "idempotent handler failed",
                extra=ident.log(idempotency_outcome=outcome, error=code),
            )

    # -- maintenance ----------------------------------------------------------------------------

    async def purge_expired(self, batch: int = 1000) -> int:
        """Delete expired keys in batches of `batch` rows; return how many were deleted."""
        total = 0
        while True:
            tag = await self._db.execute(_PURGE_SQL, batch, self.lock_timeout)
            deleted = _rowcount(tag)
            total += deleted
            if deleted < batch:
                break
            # Yield between batches so a large purge does not monopolise the loop or the pool.
            await asyncio.sleep(0)
        if total:
            logger.info("purged expired idempotency keys", extra={"deleted": total})
        return total
