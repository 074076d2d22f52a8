"""QuickBooks Online writers: Items (products), Customers, SalesReceipts (payments) and
RefundReceipts (refunds), through the `batch` endpoint (≤ 30 operations per request) as raw
HTTP (httpx) under the `quickbooks` guard (the realm is the guard's scope), not python-quickbooks
(synchronous, one object per request).

Mapped fields are the `domain.mappings` PROVIDER_FIELDS of each entity (nested dicts, e.g.
``{"Name": …, "IncomeAccountRef": {"value": "1"}}``); decimal strings (``UnitPrice``,
``TotalAmt``) are sent as JSON numbers written from the string, never through a float.

Idempotency: every write request carries Intuit's ``requestid``, derived from the records'
keys (`ctx.key(internal id, content hash)`): the engine resends a crashed batch unchanged, so
QuickBooks answers its first answer again instead of creating twice. Updates need the object's
current ``SyncToken``: one batch Query reads them first. Items and Customers have unique names
at QuickBooks: a create refused as a duplicate name (6240) adopts the existing object and
updates it (a record written before our id map knew it).

Receipts: our lines (``[{"ticket_type_id", "description", "quantity", "unit_price"}]``) become
SalesItemLineDetail lines whose ItemRef is the Item with that ticket type's id as ``Sku`` (as
the product sync writes them); a line whose ticket type has no Item, or a refund without lines,
uses one service item ``TicketToken tickets`` (created once per company when missing).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import httpx

from integration_service.domain.errors import GrantRefused, ProviderRejected
from integration_service.domain.mappings import minor_to_decimal
from integration_service.domain.model import Connection, Credential, EntityType, Provider
from integration_service.sync.ports import SYNC_KEY_NAMESPACE, OutRecord, SyncContext, WriteResult
from integration_service.sync.registry import register_writer
from meshkit.resilience import ProviderError

MINOR_VERSION = 75
MAX_BATCH_ITEMS = 30
GENERIC_ITEM_NAME = "TicketToken tickets"
GENERIC_INCOME_ACCOUNT = "1"
DUPLICATE_NAME = "6240"
STALE_OBJECT = "5010"
_NUMBER_FIELDS = frozenset({"UnitPrice", "TotalAmt", "Amount", "Qty"})


# -- JSON with exact decimals -----------------------------------------------------------------


class _Number(str):
    """A decimal string written into JSON as a number (exactly as given)."""

    __slots__ = ()


_NUMBER_MARK = "\ue000num:"  # a private-use character: never in our data
_NUMBER = re.compile('"' + re.escape(_NUMBER_MARK) + r'(-?\d+(?:\.\d+)?)"')


def _numbers(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, _Number) or (key in _NUMBER_FIELDS and isinstance(value, str)):
        return _NUMBER_MARK + str(Decimal(value))
    if isinstance(value, Decimal):
        return _NUMBER_MARK + str(value)
    return value


def dumps(body: Any) -> bytes:
    """JSON with decimal strings of number fields as JSON numbers (no float on the way)."""
    text = json.dumps(_numbers(body), ensure_ascii=False)
    return _NUMBER.sub(r"\1", text).encode()


# -- the HTTP seam ----------------------------------------------------------------------------


def _fault(body: Any) -> tuple[str, str]:
    """(code, message) of a QuickBooks Fault object or response."""
    fault = body.get("Fault") if isinstance(body, dict) and "Fault" in body else body
    errors = fault.get("Error") if isinstance(fault, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        detail = str(first.get("Detail") or first.get("Message") or "")
        return str(first.get("code") or "error"), detail[:500]
    return "error", "QuickBooks refused the request"


def request_id(ctx: SyncContext, parts: Iterable[str]) -> str:
    return str(uuid.uuid5(SYNC_KEY_NAMESPACE, f"{ctx.connection.id}|qbo|" + "|".join(parts)))


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class QuickBooksBatch:
    """Sends batch requests for one connection (shared by the four writers)."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.realm = ctx.connection.external_account_id
        self.items_by_sku: dict[str, str] = {}
        """Receipts: Item ids by Sku (our ticket type id), read once per write."""
        self.generic_item: str | None = None

    def _url(self, path: str, rid: str | None) -> str:
        base = self.ctx.api_base
        base = base if base.endswith("/v3") else base + "/v3"
        query = f"minorversion={MINOR_VERSION}" + (f"&requestid={rid}" if rid else "")
        return f"{base}/company/{self.realm}/{path}?{query}"

    async def post(self, operation: str, path: str, body: Any, rid: str | None) -> Any:
        """POST and the decoded answer; 401 → GrantRefused (the token keeper refreshes once),
        429 / 5xx → retried by the guard, another refusal of the whole request → raised."""
        url = self._url(path, rid)
        content = dumps(body)

        async def send(_connection: Connection, credential: Credential) -> Any:
            async def attempt() -> httpx.Response:
                response = await self.ctx.http.post(
                    url,
                    content=content,
                    headers={
                        "Authorization": f"Bearer {credential.bearer}",
                        "Accept": "application/json",
                        "Content-Type": "application/json",
                    },
                )
                if response.status_code == 429 or response.status_code >= 500:
                    raise ProviderError(response.status_code, headers=dict(response.headers))
                return response

            response = await self.ctx.guard.call(
                operation, attempt, idempotent=True, idempotency_key=rid, scope=self.realm
            )
            if response.status_code in (401, 403):
                raise GrantRefused("unauthorized", "QuickBooks refused the access token")
            payload = response.json() if response.content else {}
            if response.status_code >= 400:
                code, detail = _fault(payload)
                raise ProviderRejected(code, detail)
            return payload

        return await self.ctx.call(send)

    async def run(
        self, operation: str, items: Sequence[Mapping[str, Any]], rid: str | None
    ) -> dict[str, Mapping[str, Any]]:
        """One batch of ≤ 30 operations; the answers by bId."""
        assert len(items) <= MAX_BATCH_ITEMS
        payload = await self.post(operation, "batch", {"BatchItemRequest": list(items)}, rid)
        answers = payload.get("BatchItemResponse") if isinstance(payload, dict) else None
        return {str(a.get("bId")): a for a in answers or [] if isinstance(a, dict)}

    async def query(self, entity: str, where: str) -> list[Mapping[str, Any]]:
        """``SELECT * FROM entity WHERE …`` (one batch Query: read-only, no requestid)."""
        answers = await self.run(
            "batch.query", [{"bId": "q", "Query": f"SELECT * FROM {entity} WHERE {where}"}], None
        )
        found = (answers.get("q") or {}).get("QueryResponse") or {}
        return [r for r in found.get(entity) or [] if isinstance(r, dict)]

    async def sync_tokens(self, entity: str, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        rows = await self.query(entity, "Id IN (" + ", ".join(_quote(i) for i in ids) + ")")
        return {str(r["Id"]): str(r.get("SyncToken", "0")) for r in rows}


# -- writers ----------------------------------------------------------------------------------


class QuickBooksWriter:
    """Creates or updates one QuickBooks entity type from mapped records."""

    provider = Provider.QUICKBOOKS
    batch_size = MAX_BATCH_ITEMS

    def __init__(self, entity: EntityType, qbo_entity: str, unique_name: str = "") -> None:
        self.entity = entity
        self.qbo_entity = qbo_entity
        self.unique_name = unique_name
        """The field QuickBooks keeps unique (Item Name, Customer DisplayName), if any."""

    async def body(self, batch: QuickBooksBatch, record: OutRecord) -> dict[str, Any]:
        """The object to send for a record (receipts build their lines here)."""
        return dict(record.fields)

    async def prepare(self, batch: QuickBooksBatch, records: Sequence[OutRecord]) -> None:
        """Read what building the bodies needs (receipts: the Items of their lines)."""

    async def write(self, ctx: SyncContext, records: Sequence[OutRecord]) -> Sequence[WriteResult]:
        batch = QuickBooksBatch(ctx)
        await self.prepare(batch, records)
        results: dict[str, WriteResult] = {}
        adopt: list[tuple[OutRecord, str]] = []
        await self._send(batch, list(records), results, adopt)
        if adopt:
            adopted = [OutRecord(r.internal_id, r.fields, ext, r.version) for r, ext in adopt]
            await self._send(batch, adopted, results, [], salt="adopt")
        return [results[r.internal_id] for r in records]

    async def _send(
        self,
        batch: QuickBooksBatch,
        records: list[OutRecord],
        results: dict[str, WriteResult],
        adopt: list[tuple[OutRecord, str]],
        salt: str = "",
    ) -> None:
        """One batch request; a `salt` gives a follow-up request its own requestid (the same
        keys would replay the first answer)."""
        tokens = await batch.sync_tokens(
            self.qbo_entity, [r.external_id for r in records if r.external_id]
        )
        items: list[dict[str, Any]] = []
        for n, record in enumerate(records):
            body = await self.body(batch, record)
            operation = "create"
            if record.external_id and record.external_id in tokens:
                body |= {"Id": record.external_id, "SyncToken": tokens[record.external_id]}
                body["sparse"] = True
                operation = "update"
            items.append({"bId": str(n), "operation": operation, self.qbo_entity: body})
        keys = [batch.ctx.key(r.internal_id, r.version) for r in records]
        rid = request_id(batch.ctx, [salt, *keys] if salt else keys)
        answers = await batch.run(f"{self.qbo_entity.lower()}.batch", items, rid)
        for n, record in enumerate(records):
            answer = answers.get(str(n)) or {}
            written = answer.get(self.qbo_entity)
            if isinstance(written, dict) and written.get("Id") is not None:
                results[record.internal_id] = WriteResult(record.internal_id, str(written["Id"]))
                continue
            code, detail = _fault(answer.get("Fault") or {})
            if code == DUPLICATE_NAME and self.unique_name and not record.external_id:
                existing = await self._by_name(batch, record)
                if existing is not None:
                    adopt.append((record, existing))
                    continue
            results[record.internal_id] = WriteResult(
                record.internal_id,
                record.external_id,
                f"quickbooks_{code}",
                detail or "QuickBooks refused the record",
                retryable=code == STALE_OBJECT,
            )

    async def _by_name(self, batch: QuickBooksBatch, record: OutRecord) -> str | None:
        name = record.fields.get(self.unique_name)
        if not isinstance(name, str):
            return None
        found = await batch.query(self.qbo_entity, f"{self.unique_name} = {_quote(name)}")
        return str(found[0]["Id"]) if found else None

    async def delete(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[WriteResult]:
        """Items and Customers are made inactive (QuickBooks never deletes them); receipts are
        deleted. Already gone counts as deleted."""
        batch = QuickBooksBatch(ctx)
        results: list[WriteResult] = []
        for start in range(0, len(external_ids), MAX_BATCH_ITEMS):
            chunk = list(external_ids[start : start + MAX_BATCH_ITEMS])
            tokens = await batch.sync_tokens(self.qbo_entity, chunk)
            items = []
            for n, ext in enumerate(chunk):
                if ext not in tokens:
                    continue
                ref = {"Id": ext, "SyncToken": tokens[ext]}
                if self.unique_name:
                    items.append(
                        {
                            "bId": str(n),
                            "operation": "update",
                            self.qbo_entity: {**ref, "sparse": True, "Active": False},
                        }
                    )
                else:
                    items.append({"bId": str(n), "operation": "delete", self.qbo_entity: ref})
            answers = (
                await batch.run(
                    f"{self.qbo_entity.lower()}.batch_delete",
                    items,
                    request_id(batch.ctx, ["delete", *chunk, *tokens.values()]),
                )
                if items
                else {}
            )
            for n, ext in enumerate(chunk):
                answer = answers.get(str(n))
                if answer is None or "Fault" not in answer:
                    results.append(WriteResult(ext, ext))
                else:
                    code, detail = _fault(answer["Fault"])
                    results.append(WriteResult(ext, ext, f"quickbooks_{code}", detail))
        return results


class QuickBooksReceiptWriter(QuickBooksWriter):
    """SalesReceipts and RefundReceipts: our lines become SalesItemLineDetail lines."""

    def __init__(self, entity: EntityType, qbo_entity: str) -> None:
        super().__init__(entity, qbo_entity)

    async def prepare(self, batch: QuickBooksBatch, records: Sequence[OutRecord]) -> None:
        skus = {
            str(line["ticket_type_id"])
            for r in records
            for line in _our_lines(r.fields.get("Line"))
            if line.get("ticket_type_id")
        }
        batch.items_by_sku = await self._items_by_sku(batch, sorted(skus))

    async def _items_by_sku(self, batch: QuickBooksBatch, skus: Sequence[str]) -> dict[str, str]:
        if not skus:
            return {}
        rows = await batch.query("Item", "Sku IN (" + ", ".join(_quote(s) for s in skus) + ")")
        return {str(r["Sku"]): str(r["Id"]) for r in rows if r.get("Sku")}

    async def _generic_item(self, batch: QuickBooksBatch) -> str:
        if batch.generic_item is None:
            found = await batch.query("Item", f"Name = {_quote(GENERIC_ITEM_NAME)}")
            if found:
                batch.generic_item = str(found[0]["Id"])
            else:
                item = {
                    "Name": GENERIC_ITEM_NAME,
                    "Type": "Service",
                    "IncomeAccountRef": {"value": GENERIC_INCOME_ACCOUNT},
                }
                answers = await batch.run(
                    "item.batch",
                    [{"bId": "g", "operation": "create", "Item": item}],
                    request_id(batch.ctx, ["generic-item"]),
                )
                created = (answers.get("g") or {}).get("Item") or {}
                if "Id" not in created:
                    code, detail = _fault((answers.get("g") or {}).get("Fault") or {})
                    raise ProviderRejected(code, detail or "could not create the tickets item")
                batch.generic_item = str(created["Id"])
        return batch.generic_item

    async def body(self, batch: QuickBooksBatch, record: OutRecord) -> dict[str, Any]:
        fields = dict(record.fields)
        total = fields.pop("TotalAmt", None)
        currency = str((fields.get("CurrencyRef") or {}).get("value") or "USD")
        lines = fields.get("Line")
        ours = _our_lines(lines)
        if ours or not lines:
            built = [await self._line(batch, line, currency) for line in ours]
            if not built and total is not None:
                built = [
                    {
                        "DetailType": "SalesItemLineDetail",
                        "Amount": _Number(str(total)),
                        "SalesItemLineDetail": {
                            "ItemRef": {"value": await self._generic_item(batch)}
                        },
                    }
                ]
            fields["Line"] = built
        return fields

    async def _line(
        self, batch: QuickBooksBatch, line: Mapping[str, Any], currency: str
    ) -> dict[str, Any]:
        price = line.get("unit_price") or {}
        unit_minor = int(price.get("amount_minor", 0))
        cur = str(price.get("currency") or currency)
        quantity = int(line.get("quantity") or 1)
        item = batch.items_by_sku.get(str(line.get("ticket_type_id") or ""))
        if item is None:
            item = await self._generic_item(batch)
        out: dict[str, Any] = {
            "DetailType": "SalesItemLineDetail",
            "Amount": _Number(minor_to_decimal(unit_minor * quantity, cur)),
            "SalesItemLineDetail": {
                "ItemRef": {"value": item},
                "Qty": quantity,
                "UnitPrice": _Number(minor_to_decimal(unit_minor, cur)),
            },
        }
        if line.get("description"):
            out["Description"] = str(line["description"])[:4000]
        return out


def _our_lines(lines: Any) -> list[Mapping[str, Any]]:
    """Our transaction lines (not lines already in QuickBooks' shape)."""
    if not isinstance(lines, list):
        return []
    return [
        line
        for line in lines
        if isinstance(line, Mapping) and "DetailType" not in line and "unit_price" in line
    ]


ITEMS = register_writer(QuickBooksWriter(EntityType.PRODUCT, "Item", unique_name="Name"))
CUSTOMERS = register_writer(
    QuickBooksWriter(EntityType.CUSTOMER, "Customer", unique_name="DisplayName")
)
SALES_RECEIPTS = register_writer(QuickBooksReceiptWriter(EntityType.PAYMENT, "SalesReceipt"))
REFUND_RECEIPTS = register_writer(QuickBooksReceiptWriter(EntityType.REFUND, "RefundReceipt"))
