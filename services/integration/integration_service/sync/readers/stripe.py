"""Stripe reader: products (`GET /v1/products`, ``starting_after`` paging, 100 a page).

Stripe's product list has no changed-since filter, so every pull reads the whole catalog in one
go (every page of products and of prices: a venue's catalog is small, and the mirror skips the
unchanged) and answers no cursor, so every run starts from the beginning. Each product is
handed over with its default price as ``default_price_data.{unit_amount, currency}``.

`fetch` reads given products (a webhook named them) with `GET /v1/products/{id}` and its
default price; a product gone (404) or archived comes back deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

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

    async def fetch(self, ctx: SyncContext, external_ids: Sequence[str]) -> list[InRecord]:
        records: list[InRecord] = []
        for product_id in dict.fromkeys(i for i in external_ids if i):
            product = await request(
                ctx,
                "products.retrieve",
                "GET",
                ctx.api_base + f"/v1/products/{quote(product_id, safe='')}",
                refused_ok=True,
            )
            if "error" in product:
                error = product["error"] if isinstance(product["error"], Mapping) else {}
                if error.get("code") == "resource_missing":
                    records.append(InRecord(product_id, {}, deleted=True))
                continue
            price: Mapping[str, Any] | None = None
            price_ref = product.get("default_price")
            if isinstance(price_ref, Mapping):
                price = price_ref
            elif price_ref:
                price = await request(
                    ctx,
                    "prices.retrieve",
                    "GET",
                    ctx.api_base + f"/v1/prices/{quote(str(price_ref), safe='')}",
                )
            records.append(product_record(product, price))
        return records

    async def pull(self, ctx: SyncContext, cursor: str | None) -> tuple[list[InRecord], str | None]:
        prices = {p["id"]: p for p in await self._all(ctx, "/v1/prices", {})}
        records = [
            product_record(product, prices.get(product.get("default_price") or ""))
            for product in await self._all(ctx, "/v1/products", {})
        ]
        return records, None


def product_record(product: Mapping[str, Any], price: Mapping[str, Any] | None) -> InRecord:
    fields: dict[str, Any] = {
        k: product[k] for k in ("name", "description", "unit_label") if product.get(k)
    }
    if product.get("metadata"):
        fields["metadata"] = dict(product["metadata"])
    if price is not None:
        fields["default_price_data"] = {
            "unit_amount": price.get("unit_amount"),
            "currency": price.get("currency"),
        }
    return InRecord(str(product["id"]), fields, deleted=product.get("active") is False)


PRODUCTS = register_reader(StripeProductsReader())
