"""The interface between the sync engine and the provider writers/readers.

A `Writer` pushes records of one entity type to one provider in batches of its `batch_size`
(the provider's batch endpoint size); a `Reader` pulls pages of changed records after a cursor.
Both call the provider only through `SyncContext.call` (a fresh token through the TokenKeeper,
throttled and retried by the provider's guard) and answer one result per record: a record that
fails is reported in its `WriteResult` (the engine dead-letters it and goes on), never raised.
Raising is for what stops the whole batch (credentials refused, the provider down after the
guard's retries): the engine then keeps its checkpoint and the job retries or fails.

Idempotency: `ctx.key(internal_id, version)` is a UUID derived from the connection, the entity
type, our id and the content hash of the mapped fields, so a batch re-sent after a crash carries
the same keys and the provider (or the id map) makes it a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx

from integration_service.domain.model import Connection, Credential, EntityType, Provider
from meshkit.resilience import ProviderGuard

T = TypeVar("T")

# Namespace of the idempotency keys the engine derives (uuid5).
SYNC_KEY_NAMESPACE = uuid.UUID("6f1c0d2e-5b7a-4e38-9d41-2c8a9b7e3f10")


@dataclass(frozen=True)
class OutRecord:
    """One record to write, already mapped to the provider's fields."""

    internal_id: str
    fields: Mapping[str, Any]
    external_id: str | None
    """From the id map; None = create."""
    version: str
    """Content hash of the mapped fields (idempotency key material)."""


@dataclass(frozen=True)
class WriteResult:
    """What became of one record of a batch (write or delete)."""

    internal_id: str
    external_id: str | None
    error_code: str | None = None
    """None = written (or deleted)."""
    error_message: str | None = None
    retryable: bool = False


@dataclass(frozen=True)
class InRecord:
    """One record read from the provider (inbound)."""

    external_id: str
    fields: Mapping[str, Any]
    deleted: bool = False


class SyncContext:
    """What a writer or reader gets for one batch: the connection, the job, the provider's
    guard, the provider's API base URL, a shared HTTP client, `call(fn)` to call the provider
    with a working credential, and `key(...)` for idempotency keys. Writers and readers are
    stateless (one instance per (provider, entity) in the registry): all they need is here."""

    def __init__(
        self,
        *,
        connection: Connection,
        entity: EntityType,
        job_id: uuid.UUID,
        guard: ProviderGuard,
        caller: Callable[[Callable[[Connection, Credential], Awaitable[Any]]], Awaitable[Any]],
        api_base: str,
        http: httpx.AsyncClient,
    ) -> None:
        self.connection = connection
        self.entity = entity
        self.job_id = job_id
        self.guard = guard
        self.api_base = api_base.rstrip("/")
        """The provider's API base URL for this connection (the setting, or the connection's
        own api_base, e.g. Mailchimp's datacenter)."""
        self.http = http
        """A shared client (timeouts set); writers send raw HTTP through it inside
        `guard.call`, not the SDKs (their model parsing is too slow for 10k-record syncs)."""
        self._caller = caller

    async def call(self, fn: Callable[[Connection, Credential], Awaitable[T]]) -> T:
        """`fn(connection, credential)` with a fresh token (TokenKeeper.call: refreshed once,
        single-flight, when the provider refuses it). `fn` goes through `self.guard` itself
        (one guard call per HTTP request, so the rate limit counts requests)."""
        result: T = await self._caller(fn)
        return result

    def key(self, internal_id: str, version: str) -> str:
        """The idempotency key of writing this version of this record over this connection."""
        name = f"{self.connection.id}|{self.entity.value}|{internal_id}|{version}"
        return str(uuid.uuid5(SYNC_KEY_NAMESPACE, name))


class Writer(Protocol):
    """Pushes one entity type to one provider."""

    provider: Provider
    entity: EntityType
    batch_size: int

    async def write(self, ctx: SyncContext, records: Sequence[OutRecord]) -> Sequence[WriteResult]:
        """Create (external_id None) or update each record; one result per record, any order."""
        ...

    async def delete(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[WriteResult]:
        """Delete (or archive) records at the provider; one result per id (internal_id = the
        external id when the writer does not know ours). Already gone counts as deleted."""
        ...


class Reader(Protocol):
    """Pulls one entity type from one provider."""

    provider: Provider
    entity: EntityType
    page_size: int

    async def pull(
        self, ctx: SyncContext, cursor: str | None
    ) -> tuple[Sequence[InRecord], str | None]:
        """The next page of records changed after `cursor` (None = from the beginning) and the
        cursor to resume after it; an empty page means caught up (the cursor is then kept for
        the next incremental pull)."""
        ...


@runtime_checkable
class Fetcher(Protocol):
    """A reader that can also read given records by the provider's ids (optional: a webhook
    that names the changed records pulls just those; a reader without it pulls from its
    cursor)."""

    async def fetch(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[InRecord]:
        """The records with these ids as they are now (one gone at the provider comes back
        `deleted`, or is left out)."""
        ...
