"""Square customers through `POST /v2/customers/bulk-create` and `/bulk-update` (≤ 100 each) as
raw HTTP under the `square` guard.

Mapped fields (`domain.mappings` PROVIDER_FIELDS): ``given_name``, ``family_name``,
``email_address``, ``phone_number``, ``reference_id`` (our id), ``note``.

Square does not keep addresses unique, so creates must never repeat: each create's key (the
bulk map key, Square's idempotency key) is derived from the connection and OUR id only, not
the content. A create resent after a crash answers the first answer (same customer); a create
of the same record with other content (it changed before the retry) is refused
IDEMPOTENCY_KEY_REUSED, and the customer the first create made is found by its reference id
and updated. Deletes use bulk-delete; already gone counts as deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from integration_service.domain.errors import GrantRefused, ProviderRejected
from integration_service.domain.model import Connection, Credential, EntityType, Provider
from integration_service.sync.ports import SYNC_KEY_NAMESPACE, OutRecord, SyncContext, WriteResult
from integration_service.sync.registry import register_writer
from meshkit.resilience import ProviderError

SQUARE_VERSION = "2025-01-23"
MAX_BULK = 100
KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"


def create_key(ctx: SyncContext, internal_id: str) -> str:
    """The create's idempotency key: the same for every version of the record."""
    name = f"{ctx.connection.id}|square-customer-create|{internal_id}"
    return str(uuid.uuid5(SYNC_KEY_NAMESPACE, name))


def _error(answer: Mapping[str, Any]) -> tuple[str, str] | None:
    errors = answer.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code") or "error"), str(errors[0].get("detail") or "")[:500]
    return None


class SquareCustomersWriter:
    provider = Provider.SQUARE
    entity = EntityType.CUSTOMER
    batch_size = MAX_BULK

    async def _post(self, ctx: SyncContext, operation: str, path: str, body: Any) -> Any:
        url = ctx.api_base + path

        async def send(_connection: Connection, credential: Credential) -> Any:
            async def attempt() -> httpx.Response:
                response = await ctx.http.post(
                    url,
                    json=body,
                    headers={
                        "Authorization": f"Bearer {credential.bearer}",
                        "Square-Version": SQUARE_VERSION,
                    },
                )
                if response.status_code == 429 or response.status_code >= 500:
                    raise ProviderError(response.status_code, headers=dict(response.headers))
                return response

            # Every create carries its idempotency key; updates and deletes are idempotent.
            response = await ctx.guard.call(operation, attempt, idempotent=True)
            if response.status_code in (401, 403):
                raise GrantRefused("unauthorized", "Square refused the access token")
            payload = response.json() if response.content else {}
            if response.status_code >= 400:
                code, detail = _error(payload) or (str(response.status_code), "")
                raise ProviderRejected(code.lower(), detail)
            return payload

        return await ctx.call(send)

    async def write(self, ctx: SyncContext, records: Sequence[OutRecord]) -> Sequence[WriteResult]:
        results: dict[str, WriteResult] = {}
        updates = {r.external_id: r for r in records if r.external_id}
        creates = {create_key(ctx, r.internal_id): r for r in records if not r.external_id}
        if creates:
            payload = await self._post(
                ctx,
                "customers.bulk_create",
                "/v2/customers/bulk-create",
                {"customers": {k: dict(r.fields) for k, r in creates.items()}},
            )
            answers = payload.get("responses") or {}
            for key, record in creates.items():
                answer = answers.get(key) or {}
                customer = answer.get("customer")
                if isinstance(customer, dict) and customer.get("id"):
                    results[record.internal_id] = WriteResult(record.internal_id, customer["id"])
                    continue
                code, detail = _error(answer) or ("error", "Square refused the customer")
                found = await self._by_reference(ctx, record) if code == KEY_REUSED else None
                if found is not None:
                    updates[found] = OutRecord(record.internal_id, record.fields, found, "")
                    continue
                results[record.internal_id] = WriteResult(
                    record.internal_id, None, f"square_{code.lower()}", detail
                )
        if updates:
            payload = await self._post(
                ctx,
                "customers.bulk_update",
                "/v2/customers/bulk-update",
                {"customers": {ext: dict(r.fields) for ext, r in updates.items()}},
            )
            answers = payload.get("responses") or {}
            for ext, record in updates.items():
                answer = answers.get(ext) or {}
                if isinstance(answer.get("customer"), dict):
                    results[record.internal_id] = WriteResult(record.internal_id, ext)
                    continue
                code, detail = _error(answer) or ("error", "Square refused the customer")
                results[record.internal_id] = WriteResult(
                    record.internal_id,
                    None if code == "NOT_FOUND" else ext,
                    f"square_{code.lower()}",
                    detail,
                    # Deleted at Square since we wrote it: the next sync creates it again.
                    retryable=code == "NOT_FOUND",
                )
        return [results[r.internal_id] for r in records]

    async def _by_reference(self, ctx: SyncContext, record: OutRecord) -> str | None:
        reference = record.fields.get("reference_id")
        if not reference:
            return None
        payload = await self._post(
            ctx,
            "customers.search",
            "/v2/customers/search",
            {"query": {"filter": {"reference_id": {"exact": str(reference)}}}, "limit": 1},
        )
        found = payload.get("customers") or []
        return str(found[0]["id"]) if found else None

    async def delete(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[WriteResult]:
        results: list[WriteResult] = []
        for start in range(0, len(external_ids), MAX_BULK):
            chunk = list(external_ids[start : start + MAX_BULK])
            payload = await self._post(
                ctx,
                "customers.bulk_delete",
                "/v2/customers/bulk-delete",
                {"customer_ids": chunk},
            )
            answers = payload.get("responses") or {}
            for ext in chunk:
                problem = _error(answers.get(ext) or {})
                if problem is None or problem[0] == "NOT_FOUND":
                    results.append(WriteResult(ext, ext))
                else:
                    results.append(
                        WriteResult(ext, ext, f"square_{problem[0].lower()}", problem[1])
                    )
        return results


CUSTOMERS = register_writer(SquareCustomersWriter())
