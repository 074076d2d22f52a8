"""Stripe products with their default price (`/v1/products`, `/v1/prices`) as raw HTTP
(form-encoded, as Stripe's API) under the `stripe` guard, one request per call (Stripe has no
batch endpoint; the guard keeps to the account's rate), a few records in flight at once.

Mapped fields (`domain.mappings` PROVIDER_FIELDS): ``name``, ``description``, ``unit_label``,
``default_price_data.{unit_amount, currency}``, ``metadata.*``.

No duplicates by construction: a product's Stripe id is ours, derived from the connection and
our id (``tt_<hex>``; Stripe accepts a caller's product id), so a create resent after a crash
is answered ``resource_already_exists`` and turned into an update. Creates also carry an
``Idempotency-Key`` (the record's key). Prices are immutable at Stripe: an update whose amount
or currency differs from the product's default price creates a new price (its own key) and
makes it the default. Deletes archive the product (``active=false``: a product with prices
cannot be deleted); already gone counts as deleted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from integration_service.domain.errors import GrantRefused
from integration_service.domain.model import Connection, Credential, EntityType, Provider
from integration_service.sync.ports import SYNC_KEY_NAMESPACE, OutRecord, SyncContext, WriteResult
from integration_service.sync.registry import register_writer
from meshkit.resilience import ProviderError

IN_FLIGHT = 8
BATCH = 100


def product_id(ctx: SyncContext, internal_id: str) -> str:
    name = f"{ctx.connection.id}|stripe-product|{internal_id}"
    return "tt_" + uuid.uuid5(SYNC_KEY_NAMESPACE, name).hex


def form(fields: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding of nested fields (``metadata[event_id]=…``)."""
    pairs: list[tuple[str, str]] = []
    for key, value in fields.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            pairs += form(value, name)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif value is not None:
            pairs.append((name, str(value)))
    return pairs


class _Refused(Exception):
    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        assert isinstance(error, dict)
        self.status = status
        self.code = str(error.get("code") or error.get("type") or status)
        self.message = str(error.get("message") or "Stripe refused the request")[:500]
        super().__init__(self.message)


class StripeProductsWriter:
    provider = Provider.STRIPE
    entity = EntityType.PRODUCT
    batch_size = BATCH

    async def _call(
        self,
        ctx: SyncContext,
        operation: str,
        method: str,
        path: str,
        fields: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        url = ctx.api_base + path
        content = urlencode(form(fields or {})).encode()

        async def send(_connection: Connection, credential: Credential) -> httpx.Response:
            headers = {
                "Authorization": f"Bearer {credential.bearer}",
                "Content-Type": "application/x-www-form-urlencoded",
            }
            if key:
                headers["Idempotency-Key"] = key

            async def attempt() -> httpx.Response:
                response = await ctx.http.request(method, url, content=content, headers=headers)
                if response.status_code == 429 or response.status_code >= 500:
                    raise ProviderError(response.status_code, headers=dict(response.headers))
                return response

            response: httpx.Response = await ctx.guard.call(
                operation, attempt, idempotent=True, idempotency_key=key
            )
            if response.status_code == 401:
                raise GrantRefused("unauthorized", "Stripe refused the API key")
            return response

        response: httpx.Response = await ctx.call(send)
        body = response.json() if response.content else {}
        if response.status_code >= 400:
            raise _Refused(response.status_code, body)
        return dict(body)

    async def write(self, ctx: SyncContext, records: Sequence[OutRecord]) -> Sequence[WriteResult]:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(record: OutRecord) -> WriteResult:
            async with gate:
                try:
                    return WriteResult(record.internal_id, await self._upsert(ctx, record))
                except _Refused as refused:
                    return WriteResult(
                        record.internal_id,
                        record.external_id,
                        f"stripe_{refused.code}",
                        refused.message,
                    )

        return await asyncio.gather(*(one(r) for r in records))

    async def _upsert(self, ctx: SyncContext, record: OutRecord) -> str:
        fields = dict(record.fields)
        price = dict(fields.pop("default_price_data", None) or {})
        pid = record.external_id or product_id(ctx, record.internal_id)
        if record.external_id is None:
            try:
                await self._call(
                    ctx,
                    "products.create",
                    "POST",
                    "/v1/products",
                    {"id": pid, **fields, **({"default_price_data": price} if price else {})},
                    key=ctx.key(record.internal_id, record.version),
                )
                return pid
            except _Refused as refused:
                if refused.code != "resource_already_exists":
                    raise
        product = await self._call(ctx, "products.update", "POST", f"/v1/products/{pid}", fields)
        if price:
            await self._default_price(ctx, record, product, price)
        return pid

    async def _default_price(
        self,
        ctx: SyncContext,
        record: OutRecord,
        product: Mapping[str, Any],
        price: Mapping[str, Any],
    ) -> None:
        wanted = (int(price.get("unit_amount", 0)), str(price.get("currency", "")).lower())
        current = product.get("default_price")
        if isinstance(current, str) and current:
            found = await self._call(ctx, "prices.retrieve", "GET", f"/v1/prices/{current}")
            if (found.get("unit_amount"), str(found.get("currency", "")).lower()) == wanted:
                return
        made = await self._call(
            ctx,
            "prices.create",
            "POST",
            "/v1/prices",
            {"product": product["id"], "unit_amount": wanted[0], "currency": wanted[1]},
            key=ctx.key(record.internal_id, "price:" + record.version),
        )
        await self._call(
            ctx,
            "products.update",
            "POST",
            f"/v1/products/{product['id']}",
            {"default_price": made["id"]},
        )

    async def delete(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[WriteResult]:
        results = []
        for ext in external_ids:
            try:
                await self._call(
                    ctx, "products.archive", "POST", f"/v1/products/{ext}", {"active": False}
                )
                results.append(WriteResult(ext, ext))
            except _Refused as refused:
                if refused.status == 404:
                    results.append(WriteResult(ext, ext))
                else:
                    results.append(WriteResult(ext, ext, f"stripe_{refused.code}", refused.message))
        return results


PRODUCTS = register_writer(StripeProductsWriter())
