"""Square inventory: remaining tickets as PHYSICAL_COUNT changes (`POST
/v2/inventory/batch-change`, ≤ 100 per request) as raw HTTP under the `square` guard.

Mapped fields (`domain.mappings` PROVIDER_FIELDS): ``quantity`` (a decimal string),
``occurred_at``. A count is absolute, so writing it again changes nothing: the request's
idempotency key is derived from the records' keys anyway. A count belongs to the ITEM_VARIATION
of the ticket type's product: its id is the record's external id once known; the first time it
is found by SKU (our ticket type id, as the catalog writer sets it) with one catalog search per
ticket type. The location is the connection's ``location_id`` setting, else the seller's first
location. A batch is all-or-nothing at Square: a change it refuses fails its record alone and
the rest is sent again without it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from integration_service.domain.errors import ProviderRejected
from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import SYNC_KEY_NAMESPACE, OutRecord, SyncContext, WriteResult
from integration_service.sync.readers._http import request
from integration_service.sync.registry import register_writer

SQUARE_VERSION = "2025-01-23"
HEADERS = {"Square-Version": SQUARE_VERSION}
MAX_CHANGES = 100
LOCATION_SETTING = "location_id"
_CHANGE_PATH = re.compile(r"changes\[(\d+)\]")


class SquareInventoryWriter:
    provider = Provider.SQUARE
    entity = EntityType.INVENTORY
    batch_size = MAX_CHANGES

    async def _location(self, ctx: SyncContext) -> str:
        configured = ctx.connection.settings.get(LOCATION_SETTING)
        if configured:
            return str(configured)
        answer = await request(
            ctx, "locations.list", "GET", ctx.api_base + "/v2/locations", headers=HEADERS
        )
        locations = answer.get("locations") or []
        if not locations:
            raise ProviderRejected("no_location", "the Square seller has no location")
        return str(locations[0]["id"])

    async def _variation(self, ctx: SyncContext, sku: str) -> str | None:
        answer = await request(
            ctx,
            "catalog.search",
            "POST",
            ctx.api_base + "/v2/catalog/search",
            json_body={
                "object_types": ["ITEM_VARIATION"],
                "query": {"exact_query": {"attribute_name": "sku", "attribute_value": sku}},
                "limit": 1,
            },
            headers=HEADERS,
        )
        found = answer.get("objects") or []
        return str(found[0]["id"]) if found else None

    async def write(self, ctx: SyncContext, records: Sequence[OutRecord]) -> Sequence[WriteResult]:
        location = await self._location(ctx)
        results: dict[str, WriteResult] = {}
        pending: list[tuple[OutRecord, str]] = []
        for record in records:
            variation = record.external_id or await self._variation(ctx, record.internal_id)
            if variation is None:
                results[record.internal_id] = WriteResult(
                    record.internal_id,
                    None,
                    "square_product_not_synced",
                    "no Square item variation has this ticket type's SKU: sync products first",
                    retryable=True,
                )
            else:
                pending.append((record, variation))
        while pending:
            changes = [self._change(record, variation, location) for record, variation in pending]
            keys = "|".join(ctx.key(r.internal_id, r.version) for r, _ in pending)
            answer = await request(
                ctx,
                "inventory.batch_change",
                "POST",
                ctx.api_base + "/v2/inventory/changes/batch-create",
                json_body={
                    "idempotency_key": str(uuid.uuid5(SYNC_KEY_NAMESPACE, keys)),
                    "changes": changes,
                },
                headers=HEADERS,
                refused_ok=True,
            )
            errors = [e for e in answer.get("errors") or [] if isinstance(e, Mapping)]
            if not errors:
                for record, variation in pending:
                    results[record.internal_id] = WriteResult(record.internal_id, variation)
                break
            culprit = self._culprit(errors)
            if culprit is None or culprit >= len(pending):
                first = errors[0]
                code = "square_" + str(first.get("code") or "error").lower()
                for record, variation in pending:
                    results[record.internal_id] = WriteResult(
                        record.internal_id, variation, code, str(first.get("detail") or "")[:500]
                    )
                break
            bad, variation = pending.pop(culprit)
            error = errors[0]
            results[bad.internal_id] = WriteResult(
                bad.internal_id,
                None,
                "square_" + str(error.get("code") or "invalid_value").lower(),
                str(error.get("detail") or "")[:500],
            )
        return [results[r.internal_id] for r in records]

    @staticmethod
    def _change(record: OutRecord, variation: str, location: str) -> dict[str, Any]:
        occurred = record.fields.get("occurred_at") or datetime.now(UTC).isoformat()
        return {
            "type": "PHYSICAL_COUNT",
            "physical_count": {
                "catalog_object_id": variation,
                "location_id": location,
                "state": "IN_STOCK",
                "quantity": str(record.fields.get("quantity", "0")),
                "occurred_at": occurred,
            },
        }

    @staticmethod
    def _culprit(errors: Sequence[Mapping[str, Any]]) -> int | None:
        for error in errors:
            found = _CHANGE_PATH.search(str(error.get("field") or ""))
            if found:
                return int(found.group(1))
        return None

    async def delete(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[WriteResult]:
        """A ticket type gone from our side: its count goes with its product (nothing to do)."""
        return [WriteResult(ext, ext) for ext in external_ids]


INVENTORY = register_writer(SquareInventoryWriter())
