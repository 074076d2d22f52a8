"""Square catalog products: one ITEM with one ITEM_VARIATION per ticket type, written through
`POST /v2/catalog/batch-upsert` as raw HTTP (httpx) under the `square` guard — not the squareup
SDK, whose model parsing costs milliseconds per object.

Mapped fields (`domain.mappings` PROVIDER_FIELDS for Square products): ``item_data.{name,
description}`` and ``item_variation_data.{name, sku, price_money.{amount, currency}}``.

One request carries one batch of up to 1,000 objects (500 products: an item and its variation
each). A batch is all-or-nothing at Square: when it is refused for one object, that record
fails (its own error) and the rest is sent again without it. New objects get client ids
``#item-<our id>`` / ``#var-<our id>``; the external id stored in the id map is
``<item id>/<variation id>`` (the inventory writer reads the variation from it), so updates
name both objects and the variation keeps its id. Deletes use `batch-delete` (≤ 200 ids; the
variation goes with its item). The idempotency key of a request is derived from the records'
keys (`ctx.key(internal id, content hash)`): the engine resends a crashed batch unchanged, so
Square answers its first answer again instead of creating the objects twice.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from integration_service.domain.errors import GrantRefused
from integration_service.domain.model import Connection, Credential, EntityType, Provider
from integration_service.sync.ports import SYNC_KEY_NAMESPACE, OutRecord, SyncContext, WriteResult
from integration_service.sync.registry import register_writer
from meshkit.resilience import ProviderError

SQUARE_VERSION = "2025-01-23"
MAX_BATCH_OBJECTS = 1000
MAX_DELETE_IDS = 200
_OBJECT_PATH = re.compile(r"batches\[0\]\.objects\[(\d+)\]")


def _split(external_id: str | None) -> tuple[str | None, str | None]:
    if not external_id:
        return None, None
    item, _, variation = external_id.partition("/")
    return item or None, variation or None


def catalog_object(record: OutRecord) -> dict[str, Any]:
    """The ITEM (with its variation nested) for one record."""
    fields = record.fields
    item_id, var_id = _split(record.external_id)
    item_data = dict(fields.get("item_data") or {})
    var_data = dict(fields.get("item_variation_data") or {})
    var_data.setdefault("pricing_type", "FIXED_PRICING")
    if "name" not in var_data and "name" in item_data:
        var_data["name"] = item_data["name"]
    variation: dict[str, Any] = {
        "type": "ITEM_VARIATION",
        "id": var_id or f"#var-{record.internal_id}",
        "item_variation_data": var_data,
    }
    if item_id:
        var_data["item_id"] = item_id
    return {
        "type": "ITEM",
        "id": item_id or f"#item-{record.internal_id}",
        "present_at_all_locations": True,
        "item_data": {**item_data, "variations": [variation]},
    }


def batch_key(ctx: SyncContext, records: Sequence[OutRecord]) -> str:
    keys = "|".join(ctx.key(r.internal_id, r.version) for r in records)
    return str(uuid.uuid5(SYNC_KEY_NAMESPACE, keys))


def _errors(body: Any) -> list[Mapping[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [e for e in body["errors"] if isinstance(e, dict)]
    return []


class SquareCatalogWriter:
    provider = Provider.SQUARE
    entity = EntityType.PRODUCT
    batch_size = MAX_BATCH_OBJECTS // 2

    @staticmethod
    def _headers(credential: Credential) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {credential.bearer}",
            "Square-Version": SQUARE_VERSION,
            "Content-Type": "application/json",
        }

    async def _post(
        self, ctx: SyncContext, operation: str, path: str, body: Mapping[str, Any], key: str
    ) -> httpx.Response:
        async def send(_connection: Connection, credential: Credential) -> httpx.Response:
            response: httpx.Response = await ctx.guard.call(
                operation,
                lambda: ctx.http.post(
                    ctx.api_base + path, json=body, headers=self._headers(credential)
                ),
                idempotent=True,
                idempotency_key=key,
            )
            if response.status_code == 401:
                raise GrantRefused("unauthorized", "Square refused the access token")
            return response

        result: httpx.Response = await ctx.call(send)
        return result

    async def write(self, ctx: SyncContext, records: Sequence[OutRecord]) -> Sequence[WriteResult]:
        results: list[WriteResult] = []
        pending = list(records)
        while pending:
            key = batch_key(ctx, pending)
            body = {
                "idempotency_key": key,
                "batches": [{"objects": [catalog_object(r) for r in pending]}],
            }
            response = await self._post(
                ctx, "catalog.batch_upsert", "/v2/catalog/batch-upsert", body, key
            )
            payload = response.json() if response.content else {}
            if response.status_code == 200 and not _errors(payload):
                results += self._written(pending, payload)
                break
            if response.status_code >= 500 or response.status_code == 429:
                raise ProviderError(response.status_code, "Square catalog batch-upsert failed")
            errors = _errors(payload)
            culprit = self._culprit(errors)
            if culprit is None or culprit >= len(pending):
                first = errors[0] if errors else {}
                code = str(first.get("code") or response.status_code).lower()
                detail = str(first.get("detail") or "Square refused the batch")
                results += [
                    WriteResult(r.internal_id, r.external_id, code, detail) for r in pending
                ]
                break
            bad = pending.pop(culprit)
            error = next((e for e in errors if _OBJECT_PATH.search(str(e.get("field") or ""))), {})
            code = str(error.get("code") or "invalid_value").lower()
            if code == "not_found" and bad.external_id:
                # Deleted at Square since we wrote it: create it again.
                pending.insert(
                    culprit,
                    OutRecord(bad.internal_id, bad.fields, None, bad.version),
                )
                continue
            results.append(
                WriteResult(
                    bad.internal_id,
                    bad.external_id,
                    code,
                    str(error.get("detail") or "refused by Square"),
                )
            )
        return results

    @staticmethod
    def _culprit(errors: Sequence[Mapping[str, Any]]) -> int | None:
        for error in errors:
            found = _OBJECT_PATH.search(str(error.get("field") or ""))
            if found:
                return int(found.group(1))
        return None

    @staticmethod
    def _written(records: Sequence[OutRecord], payload: Mapping[str, Any]) -> list[WriteResult]:
        ids = {
            str(m.get("client_object_id")): str(m.get("object_id"))
            for m in payload.get("id_mappings") or []
            if isinstance(m, dict)
        }
        out: list[WriteResult] = []
        for r in records:
            item_id, var_id = _split(r.external_id)
            item = item_id or ids.get(f"#item-{r.internal_id}")
            variation = var_id or ids.get(f"#var-{r.internal_id}")
            if item and variation:
                out.append(WriteResult(r.internal_id, f"{item}/{variation}"))
            else:
                out.append(
                    WriteResult(r.internal_id, r.external_id, "no_id_mapping", "Square named no id")
                )
        return out

    async def delete(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[WriteResult]:
        results: list[WriteResult] = []
        for start in range(0, len(external_ids), MAX_DELETE_IDS):
            chunk = list(external_ids[start : start + MAX_DELETE_IDS])
            items = [_split(e)[0] or e for e in chunk]
            key = str(uuid.uuid5(SYNC_KEY_NAMESPACE, "delete|" + "|".join(items)))
            response = await self._post(
                ctx, "catalog.batch_delete", "/v2/catalog/batch-delete", {"object_ids": items}, key
            )
            if response.status_code == 200:
                results += [WriteResult(e, e) for e in chunk]
                continue
            if response.status_code >= 500 or response.status_code == 429:
                raise ProviderError(response.status_code, "Square catalog batch-delete failed")
            errors = _errors(response.json() if response.content else {})
            code = str((errors[0] if errors else {}).get("code") or response.status_code).lower()
            results += [WriteResult(e, e, code, "Square refused the delete") for e in chunk]
        return results


register_writer(SquareCatalogWriter())
