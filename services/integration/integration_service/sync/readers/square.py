"""Square readers: customers (`POST /v2/customers/search` filtered by ``updated_at``) and
catalog items (`POST /v2/catalog/search` with ``begin_time``, deleted objects included).

Cursor (JSON, `_http.Bound`): ``since`` / ``seen`` — the newest ``updated_at`` the previous run
read and the ids read at it (Square's bound is inclusive: those are dropped when read again, so
a caught-up reader answers an empty page), ``page`` — Square's page cursor within a run,
``max`` / ``maxseen`` — the newest read so far in the run.

Records are handed over in the shape of the mapping's provider fields: customers as Square
answers them; items as ``item_data.{name, description}`` and ``item_variation_data.{name, sku,
price_money}`` of the first variation, with the external id ``<item id>/<variation id>`` the
catalog writer stores (a deleted item comes back without its variations: its id is the item's
alone, which the id map finds by that prefix).

Inventory (`SquareInventoryReader`): the IN_STOCK counts changed after the bound
(`POST /v2/inventory/counts/batch-retrieve` with ``updated_after``, 1,000 a page, the
connection's ``location_id`` setting when set), each as ``quantity`` / ``occurred_at`` (the
count's ``calculated_at``) under the item variation's id — the external id the inventory writer
keeps for our ticket type.

`fetch` reads given records (a webhook named them): customers by `bulk-retrieve` (100 a
request), items by `batch-retrieve` (1,000 ids a request; ``<item>/<variation>`` ids are asked
by the item); one Square no longer has comes back deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
LOCATION_SETTING = "location_id"  # as the inventory writer's
HEADERS = {"Square-Version": SQUARE_VERSION}
CUSTOMER_FIELDS = (
    "given_name",
    "family_name",
    "email_address",
    "phone_number",
    "reference_id",
    "note",
)


def _chunks(ids: Sequence[str], size: int) -> list[list[str]]:
    unique = list(dict.fromkeys(i for i in ids if i))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


class SquareCustomersReader:
    provider = Provider.SQUARE
    entity = EntityType.CUSTOMER
    page_size = 100

    async def fetch(self, ctx: SyncContext, external_ids: Sequence[str]) -> list[InRecord]:
        records: list[InRecord] = []
        for chunk in _chunks(external_ids, self.page_size):
            answer = await request(
                ctx,
                "customers.bulk_retrieve",
                "POST",
                ctx.api_base + "/v2/customers/bulk-retrieve",
                json_body={"customer_ids": chunk},
                headers=HEADERS,
            )
            responses = answer.get("responses") or {}
            for customer_id in chunk:
                found = responses.get(customer_id) or {}
                c = found.get("customer") if isinstance(found, Mapping) else None
                if isinstance(c, Mapping):
                    fields = {k: c[k] for k in CUSTOMER_FIELDS if c.get(k) is not None}
                    records.append(InRecord(str(c["id"]), fields))
                elif _not_found(found):
                    records.append(InRecord(customer_id, {}, deleted=True))
        return records

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


def _not_found(answer: Any) -> bool:
    errors = answer.get("errors") if isinstance(answer, Mapping) else None
    return any(isinstance(e, Mapping) and e.get("code") == "NOT_FOUND" for e in errors or [])


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

    async def fetch(self, ctx: SyncContext, external_ids: Sequence[str]) -> list[InRecord]:
        records: list[InRecord] = []
        for chunk in _chunks([i.split("/", 1)[0] for i in external_ids], self.page_size):
            answer = await request(
                ctx,
                "catalog.batch_retrieve",
                "POST",
                ctx.api_base + "/v2/catalog/batch-retrieve",
                json_body={"object_ids": chunk},
                headers=HEADERS,
            )
            seen: set[str] = set()
            for item in answer.get("objects") or []:
                if not isinstance(item, Mapping) or item.get("type") != "ITEM":
                    continue
                seen.add(str(item["id"]))
                external, fields = item_fields(item)
                records.append(InRecord(external, fields, deleted=bool(item.get("is_deleted"))))
            # Square leaves out what is deleted (or never was): deleted here.
            records += [InRecord(i, {}, deleted=True) for i in chunk if i not in seen]
        return records

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


class SquareInventoryReader:
    provider = Provider.SQUARE
    entity = EntityType.INVENTORY
    page_size = 1000

    def _body(self, ctx: SyncContext) -> dict[str, Any]:
        body: dict[str, Any] = {"states": ["IN_STOCK"], "limit": self.page_size}
        location = ctx.connection.settings.get(LOCATION_SETTING)
        if location:
            body["location_ids"] = [str(location)]
        return body

    @staticmethod
    def _record(count: Mapping[str, Any]) -> InRecord:
        fields = {"quantity": str(count.get("quantity") or "0")}
        if count.get("calculated_at"):
            fields["occurred_at"] = str(count["calculated_at"])
        return InRecord(str(count["catalog_object_id"]), fields)

    async def fetch(self, ctx: SyncContext, external_ids: Sequence[str]) -> list[InRecord]:
        records: list[InRecord] = []
        for chunk in _chunks(external_ids, self.page_size):
            page: str | None = None
            while True:
                body = {**self._body(ctx), "catalog_object_ids": chunk}
                if page:
                    body["cursor"] = page
                answer = await request(
                    ctx,
                    "inventory.batch_counts",
                    "POST",
                    ctx.api_base + "/v2/inventory/counts/batch-retrieve",
                    json_body=body,
                    headers=HEADERS,
                )
                records += [
                    self._record(c) for c in answer.get("counts") or [] if isinstance(c, Mapping)
                ]
                page = answer.get("cursor")
                if not page:
                    break
        return records

    async def pull(self, ctx: SyncContext, cursor: str | None) -> tuple[list[InRecord], str | None]:
        state = decode(cursor)
        bound = resume(state)
        page = state.get("page")
        records: list[InRecord] = []
        while True:
            body = self._body(ctx)
            if bound.since:
                body["updated_after"] = earlier(bound.since)  # strict, in whole seconds
            if page:
                body["cursor"] = page
            answer = await request(
                ctx,
                "inventory.batch_counts",
                "POST",
                ctx.api_base + "/v2/inventory/counts/batch-retrieve",
                json_body=body,
                headers=HEADERS,
            )
            for c in answer.get("counts") or []:
                if isinstance(c, Mapping) and bound.keep(
                    version_key(f"{c['catalog_object_id']}@{c.get('location_id')}", c),
                    str(c.get("calculated_at")),
                ):
                    records.append(self._record(c))
            page = answer.get("cursor")
            if not page:
                return records, end(bound)
            if records:
                return records, mid(bound, page=page)


CUSTOMERS = register_reader(SquareCustomersReader())
CATALOG = register_reader(SquareCatalogReader())
INVENTORY = register_reader(SquareInventoryReader())
