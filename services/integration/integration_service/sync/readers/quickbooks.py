"""QuickBooks readers: Items (products) and Customers.

A first pull (no cursor) pages the whole entity with ``query`` (``SELECT * FROM Item
STARTPOSITION n MAXRESULTS 1000``); later pulls use Change Data Capture (``cdc?entities=Item
&changedSince=T``, deleted records as ``status: Deleted``). Cursor (JSON, `_http.Bound`):
``pos`` — the next start position of a first pull, ``since`` / ``seen`` — the newest
``MetaData.LastUpdatedTime`` read and the ids read at it. CDC compares in whole seconds, so it
is asked from one second before the cursor, and what it answers again at or before the bound
is dropped. CDC reaches back 30 days only: an older cursor pages the whole entity again.

`fetch` reads given records (a webhook named them) with ``SELECT * FROM Item WHERE Id IN
(…)``, 100 ids a query; an id QuickBooks no longer answers comes back deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import InRecord, SyncContext
from integration_service.sync.readers._http import (
    Bound,
    decode,
    earlier,
    end,
    mid,
    request,
    resume,
    version_key,
)
from integration_service.sync.registry import register_reader

MINOR_VERSION = 75
PAGE = 1000
CDC_DAYS = 29
FETCH_IDS = 100


def _updated(record: Mapping[str, Any]) -> str:
    meta = record.get("MetaData") or {}
    return str(meta.get("LastUpdatedTime") or "")


def _recent(since: str) -> bool:
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return datetime.now(UTC) - moment < timedelta(days=CDC_DAYS)


class QuickBooksReader:
    provider = Provider.QUICKBOOKS
    page_size = PAGE

    def __init__(self, entity: EntityType, qbo_entity: str) -> None:
        self.entity = entity
        self.qbo_entity = qbo_entity

    def _url(self, ctx: SyncContext, path: str) -> str:
        base = ctx.api_base if ctx.api_base.endswith("/v3") else ctx.api_base + "/v3"
        return f"{base}/company/{ctx.connection.external_account_id}/{path}"

    async def fetch(self, ctx: SyncContext, external_ids: Sequence[str]) -> list[InRecord]:
        wanted = list(dict.fromkeys(i for i in external_ids if i.isdigit()))
        records: list[InRecord] = []
        for start in range(0, len(wanted), FETCH_IDS):
            chunk = wanted[start : start + FETCH_IDS]
            answer = await request(
                ctx,
                "query",
                "GET",
                self._url(ctx, "query"),
                params={
                    "query": f"SELECT * FROM {self.qbo_entity} WHERE Id IN "
                    f"({', '.join(repr(i) for i in chunk)}) MAXRESULTS {PAGE}",
                    "minorversion": MINOR_VERSION,
                },
                scope=ctx.connection.external_account_id,
            )
            found = [
                r
                for r in (answer.get("QueryResponse") or {}).get(self.qbo_entity) or []
                if isinstance(r, Mapping)
            ]
            records += [InRecord(str(r["Id"]), dict(r)) for r in found]
            seen = {str(r["Id"]) for r in found}
            records += [InRecord(i, {}, deleted=True) for i in chunk if i not in seen]
        return records

    async def pull(self, ctx: SyncContext, cursor: str | None) -> tuple[list[InRecord], str | None]:
        state = decode(cursor)
        realm = ctx.connection.external_account_id
        bound = resume(state)
        if bound.since and "pos" not in state and _recent(bound.since):
            answer = await request(
                ctx,
                "cdc",
                "GET",
                self._url(ctx, "cdc"),
                params={
                    "entities": self.qbo_entity,
                    "changedSince": earlier(bound.since),
                    "minorversion": MINOR_VERSION,
                },
                scope=realm,
            )
            records = []
            for cdc in answer.get("CDCResponse") or []:
                for query in cdc.get("QueryResponse") or []:
                    for r in query.get(self.qbo_entity) or []:
                        if isinstance(r, Mapping) and bound.keep(
                            version_key(str(r["Id"]), r), _updated(r)
                        ):
                            deleted = r.get("status") == "Deleted"
                            records.append(InRecord(str(r["Id"]), dict(r), deleted=deleted))
            return records, end(bound)
        position = int(state.get("pos") or 1)
        answer = await request(
            ctx,
            "query",
            "GET",
            self._url(ctx, "query"),
            params={
                "query": f"SELECT * FROM {self.qbo_entity} STARTPOSITION {position} "
                f"MAXRESULTS {PAGE}",
                "minorversion": MINOR_VERSION,
            },
            scope=realm,
        )
        found = [
            r
            for r in (answer.get("QueryResponse") or {}).get(self.qbo_entity) or []
            if isinstance(r, Mapping)
        ]
        full = Bound()  # a whole listing: every record, and the bound for CDC afterwards
        full.newest, full.at_newest = bound.newest, set(bound.at_newest)
        records = [
            InRecord(str(r["Id"]), dict(r))
            for r in found
            if full.keep(version_key(str(r["Id"]), r), _updated(r))
        ]
        if len(found) == PAGE:
            return records, mid(full, pos=position + PAGE)
        return records, end(full)


ITEMS = register_reader(QuickBooksReader(EntityType.PRODUCT, "Item"))
CUSTOMERS = register_reader(QuickBooksReader(EntityType.CUSTOMER, "Customer"))
