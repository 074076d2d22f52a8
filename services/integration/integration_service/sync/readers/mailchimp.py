"""Mailchimp reader: audience members changed since a time
(`GET /3.0/lists/{list}/members?since_last_changed=T`, ``offset`` / ``count`` paging).

Cursor (JSON, `_http.Bound`): ``since`` / ``seen`` — the newest ``last_changed`` the previous
run read and the ids read at it, ``offset`` / ``phase`` — the next page within a run.
Live members first, then the archived ones (Mailchimp lists them only when asked by status):
they are deleted records. The external id is the subscriber hash (Mailchimp's member id).
The bound is asked one second early (Mailchimp compares in whole seconds).

`fetch` reads given members (a webhook named them) one by one
(`GET /3.0/lists/{list}/members/{subscriber hash}`); a member gone (404) or archived comes
back deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

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
from integration_service.sync.writers.mailchimp import AUDIENCE_SETTING

PAGE = 1000
MEMBER_FIELDS = ("email_address", "status", "merge_fields", "language")


class MailchimpMembersReader:
    provider = Provider.MAILCHIMP
    entity = EntityType.CUSTOMER
    page_size = PAGE

    async def _audience(self, ctx: SyncContext) -> str:
        configured = ctx.connection.settings.get(AUDIENCE_SETTING)
        if configured:
            return str(configured)
        answer = await request(
            ctx, "lists.list", "GET", ctx.api_base + "/3.0/lists", params={"count": 1}
        )
        return str((answer.get("lists") or [{}])[0].get("id") or "")

    async def fetch(self, ctx: SyncContext, external_ids: Sequence[str]) -> list[InRecord]:
        audience = await self._audience(ctx)
        if not audience:
            return []
        records: list[InRecord] = []
        for member_id in dict.fromkeys(i for i in external_ids if i):
            m = await request(
                ctx,
                "lists.member",
                "GET",
                ctx.api_base + f"/3.0/lists/{audience}/members/{quote(member_id, safe='')}",
                refused_ok=True,
            )
            if isinstance(m.get("status"), int):  # an error document: 404, the member is gone
                if m["status"] == 404:
                    records.append(InRecord(member_id, {}, deleted=True))
                continue
            fields = {k: m[k] for k in MEMBER_FIELDS if m.get(k) is not None}
            records.append(
                InRecord(
                    str(m.get("id") or member_id), fields, deleted=m.get("status") == "archived"
                )
            )
        return records

    async def pull(self, ctx: SyncContext, cursor: str | None) -> tuple[list[InRecord], str | None]:
        state = decode(cursor)
        audience = await self._audience(ctx)
        if not audience:
            return [], cursor
        bound = resume(state)
        offset = int(state.get("offset") or 0)
        archived = state.get("phase") == "archived"
        records: list[InRecord] = []
        while True:
            params: dict[str, Any] = {"count": PAGE, "offset": offset}
            if archived:
                params["status"] = "archived"
            if bound.since:
                params["since_last_changed"] = earlier(bound.since)
            answer = await request(
                ctx,
                "lists.members",
                "GET",
                ctx.api_base + f"/3.0/lists/{audience}/members",
                params=params,
            )
            found = [m for m in answer.get("members") or [] if isinstance(m, Mapping)]
            for m in found:
                if bound.keep(version_key(str(m["id"]), m), str(m.get("last_changed") or "")):
                    fields = {k: m[k] for k in MEMBER_FIELDS if m.get(k) is not None}
                    records.append(
                        InRecord(str(m["id"]), fields, deleted=m.get("status") == "archived")
                    )
            if len(found) == PAGE:
                offset += PAGE
            elif not archived:
                # The live members are read: now the archived ones (listed apart).
                archived, offset = True, 0
            else:
                return records, end(bound)
            if records:
                phase = "archived" if archived else None
                return records, mid(bound, offset=offset, phase=phase)


MEMBERS = register_reader(MailchimpMembersReader())
