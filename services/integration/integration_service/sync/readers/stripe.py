"""Stripe reader: products (`GET /v1/products`, ``starting_after`` paging, 100 a page).

Stripe's product list has no changed-since filter, so every pull reads the whole catalog in one
go (every page of products and of prices: a venue's catalog is small, and the mirror skips the
unchanged) and answers no cursor, so every run starts from the beginning. Each product is
handed over with its default price as ``default_price_data.{unit_amount, currency}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import InRecord, SyncContext
from integration_service.sync.readers._http import request
from integration_service.sync.registry import register_reader

PAGE = 100


class StripeProductsReader:
    provider = Provider.STRIPE
    entity = EntityType.PRODUCT
    page_size = PAGE

    async def _all(self, ctx: SyncContext, path: str, params: dict[str, Any]) -> list[Any]:
        found: list[Any] = []
        after = ""
        while True:
            page = await request(
                ctx,
                path.strip("/").replace("v1/", "") + ".list",
                "GET",
                ctx.api_base + path,
                params={**params, "limit": PAGE, **({"starting_after": after} if after else {})},
            )
            data = [d for d in page.get("data") or [] if isinstance(d, Mapping)]
            found += data
            if not page.get("has_more") or not data:
                return found
            after = str(data[-1]["id"])

    async def pull(self, ctx: SyncContext, cursor: str | None) -> tuple[list[InRecord], str | None]:
        prices = {p["id"]: p for p in await self._all(ctx, "/v1/prices", {})}
        records = []
        for product in await self._all(ctx, "/v1/products", {}):
            fields: dict[str, Any] = {
                k: product[k] for k in ("name", "description", "unit_label") if product.get(k)
            }
            if product.get("metadata"):
                fields["metadata"] = dict(product["metadata"])
            price = prices.get(product.get("default_price") or "")
            if price is not None:
                fields["default_price_data"] = {
                    "unit_amount": price.get("unit_amount"),
                    "currency": price.get("currency"),
                }
            records.append(
                InRecord(str(product["id"]), fields, deleted=product.get("active") is False)
            )
        return records, None


PRODUCTS = register_reader(StripeProductsReader())
