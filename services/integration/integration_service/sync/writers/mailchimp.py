"""Mailchimp audience members (customers) through batch subscribe (`POST /3.0/lists/{list}`,
≤ 500 members, ``update_existing``) as raw HTTP under the `mailchimp` guard (10 connections in
flight per account), not the mailchimp-marketing SDK (synchronous).

The audience is the connection's ``audience_id`` setting, else the account's first audience.
A member's external id is its subscriber hash (MD5 of the lower-cased address, Mailchimp's own
id), so a resent batch updates the same members: batch subscribe is an upsert by address and
creates nothing twice. Mapped fields (`domain.mappings` PROVIDER_FIELDS): ``email_address``,
``status``, ``merge_fields.*``, ``language``. A member Mailchimp already has keeps its status
unless the record subscribes them (``subscribed`` is sent as ``status``; any other status only
as ``status_if_new``): a buyer's later purchase never unsubscribes an address. Deletes archive
the member (Mailchimp's DELETE); already gone counts as deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from integration_service.domain.errors import GrantRefused, ProviderRejected
from integration_service.domain.model import Connection, Credential, EntityType, Provider
from integration_service.sync.ports import OutRecord, SyncContext, WriteResult
from integration_service.sync.registry import register_writer
from meshkit.resilience import ProviderError

MAX_BATCH_MEMBERS = 500
AUDIENCE_SETTING = "audience_id"


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


class MailchimpMembersWriter:
    provider = Provider.MAILCHIMP
    entity = EntityType.CUSTOMER
    batch_size = MAX_BATCH_MEMBERS

    async def _request(
        self, ctx: SyncContext, operation: str, method: str, path: str, body: Any = None
    ) -> httpx.Response:
        url = ctx.api_base + "/3.0" + path

        async def send(_connection: Connection, credential: Credential) -> httpx.Response:
            async def attempt() -> httpx.Response:
                response = await ctx.http.request(
                    method,
                    url,
                    json=body,
                    headers={"Authorization": f"Bearer {credential.bearer}"},
                )
                if response.status_code == 429 or response.status_code >= 500:
                    raise ProviderError(response.status_code, headers=dict(response.headers))
                return response

            # Batch subscribe is an upsert by address and DELETE archives: both safe to retry.
            response: httpx.Response = await ctx.guard.call(operation, attempt, idempotent=True)
            if response.status_code in (401, 403):
                raise GrantRefused("unauthorized", "Mailchimp refused the access token")
            return response

        result: httpx.Response = await ctx.call(send)
        return result

    async def _audience(self, ctx: SyncContext) -> str:
        configured = ctx.connection.settings.get(AUDIENCE_SETTING)
        if configured:
            return str(configured)
        response = await self._request(ctx, "lists.list", "GET", "/lists?count=1")
        lists = (response.json() if response.content else {}).get("lists") or []
        if response.status_code != 200 or not lists:
            raise ProviderRejected("no_audience", "the Mailchimp account has no audience")
        return str(lists[0]["id"])

    @staticmethod
    def member(fields: Mapping[str, Any]) -> dict[str, Any]:
        entry = {k: v for k, v in fields.items() if k != "status"}
        status = fields.get("status") or "transactional"
        entry["status_if_new"] = status
        if status == "subscribed":
            entry["status"] = status
        return entry

    async def write(self, ctx: SyncContext, records: Sequence[OutRecord]) -> Sequence[WriteResult]:
        audience = await self._audience(ctx)
        body = {
            "members": [self.member(r.fields) for r in records],
            "update_existing": True,
        }
        response = await self._request(
            ctx, "lists.batch_subscribe", "POST", f"/lists/{audience}", body
        )
        payload = response.json() if response.content else {}
        if response.status_code != 200:
            raise ProviderRejected(
                str(payload.get("title") or response.status_code),
                str(payload.get("detail") or "")[:500],
            )
        failed = {
            str(e.get("email_address") or "").lower(): e
            for e in payload.get("errors") or []
            if isinstance(e, dict)
        }
        results = []
        for record in records:
            email = str(record.fields.get("email_address") or "").lower()
            error = failed.get(email)
            if error is not None or not email:
                error = error or {}
                results.append(
                    WriteResult(
                        record.internal_id,
                        record.external_id,
                        "mailchimp_" + str(error.get("error_code") or "invalid").lower(),
                        str(error.get("error") or "Mailchimp refused the member")[:500],
                    )
                )
            else:
                results.append(WriteResult(record.internal_id, subscriber_hash(email)))
        return results

    async def delete(self, ctx: SyncContext, external_ids: Sequence[str]) -> Sequence[WriteResult]:
        audience = await self._audience(ctx)
        results = []
        for ext in external_ids:
            response = await self._request(
                ctx, "lists.members.archive", "DELETE", f"/lists/{audience}/members/{ext}"
            )
            if response.status_code in (204, 200, 404):
                results.append(WriteResult(ext, ext))
            else:
                results.append(
                    WriteResult(ext, ext, f"mailchimp_{response.status_code}", response.text[:500])
                )
        return results


MEMBERS = register_writer(MailchimpMembersWriter())
