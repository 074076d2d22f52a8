"""Square readers: customers (`POST /v2/customers/search` filtered by ``updated_at``) and
catalog items (`POST /v2/catalog/search` with ``begin_time``, deleted objects included).

Cursor (JSON, `_http.Bound`): ``since`` / ``seen`` — the newest ``updated_at`` the previous run
read and the ids read at it (Square's bound is inclusive: those are dropped when read again, so
a caught-up reader answers an empty page), ``page`` — Square's page cursor within a run,
``max`` / ``maxseen`` — the newest read so far in the run.

Records are handed over in the shape of the mapping's provider fields: customers as Square
answers them; items as ``item_data.{name, description}`` and ``item_variation_data.{name, sku,
price_money}`` of the first variation, with the external id ``<item id>/<variation id>`` the
catalog writer stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import InRecord, SyncContext
from integration_service.sync.readers._http import (
    decode,
    earlier,
    end,
    mid,
    request,
    resume,
    version_key,
)
from integration_service.sync.registry import register_reader

SQUARE_VERSION = "2025-01-23"
HEADERS = {"Square-Version": SQUARE_VERSION}
CUSTOMER_FIELDS = (
    "given_name",
    "family_name",
    "email_address",
    "phone_number",
    "reference_id",
    "note",
)


class SquareCustomersReader:
    provider = Provider.SQUARE
    entity = EntityType.CUSTOMER
    page_size = 100

    async def pull(self, ctx: SyncContext, cursor: str | None) -> tuple[list[InRecord], str | None]:
        state = decode(cursor)
        bound = resume(state)
        page = state.get("page")
        records: list[InRecord] = []
        while True:
            body: dict[str, Any] = {"limit": self.page_size}
            if bound.since:
                body["query"] = {"filter": {"updated_at": {"start_at": bound.since}}}
            if page:
                body["cursor"] = page
            answer = await request(
                ctx,
                "customers.search",
                "POST",
                ctx.api_base + "/v2/customers/search",
                json_body=body,
                headers=HEADERS,
            )
            for c in answer.get("customers") or []:
                if isinstance(c, Mapping) and bound.keep(
                    version_key(str(c["id"]), c), str(c.get("updated_at"))
                ):
                    fields = {k: c[k] for k in CUSTOMER_FIELDS if c.get(k) is not None}
                    records.append(InRecord(str(c["id"]), fields))
            page = answer.get("cursor")
            if not page:
                return records, end(bound)
            if records:
                return records, mid(bound, page=page)


def item_fields(item: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    data = item.get("item_data") or {}
    variations = data.get("variations") or [{}]
    variation = variations[0] if isinstance(variations[0], Mapping) else {}
    var_data = variation.get("item_variation_data") or {}
    fields: dict[str, Any] = {
        "item_data": {k: data[k] for k in ("name", "description") if data.get(k) is not None},
        "item_variation_data": {
            k: var_data[k] for k in ("name", "sku", "price_money") if var_data.get(k) is not None
        },
    }
    external = f"{item['id']}/{variation['id']}" if variation.get("id") else str(item["id"])
    return external, fields


class SquareCatalogReader:
    provider = Provider.SQUARE
    entity = EntityType.PRODUCT
    page_size = 1000

    async def pull(self, ctx: SyncContext, cursor: str | None) -> tuple[list[InRecord], str | None]:
        state = decode(cursor)
        bound = resume(state)
        page = state.get("page")
        records: list[InRecord] = []
        while True:
            body: dict[str, Any] = {
                "object_types": ["ITEM"],
                "include_deleted_objects": True,
                "limit": self.page_size,
            }
            if bound.since:
                body["begin_time"] = earlier(bound.since)  # strict, in whole seconds
            if page:
                body["cursor"] = page
            answer = await request(
                ctx,
                "catalog.search",
                "POST",
                ctx.api_base + "/v2/catalog/search",
                json_body=body,
                headers=HEADERS,
            )
            for item in answer.get("objects") or []:
                if not isinstance(item, Mapping) or item.get("type") != "ITEM":
                    continue
                if bound.keep(version_key(str(item["id"]), item), str(item.get("updated_at"))):
                    external, fields = item_fields(item)
                    deleted = bool(item.get("is_deleted"))
                    records.append(InRecord(external, fields, deleted=deleted))
            page = answer.get("cursor")
            if not page:
                return records, end(bound)
            if records:
                return records, mid(bound, page=page)


CUSTOMERS = register_reader(SquareCustomersReader())
CATALOG = register_reader(SquareCatalogReader())
