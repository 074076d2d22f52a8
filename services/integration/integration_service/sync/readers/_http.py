"""The readers' one HTTP seam: a JSON request to the provider through `ctx.call` (a working
credential from the token keeper) under the provider's guard (reads are idempotent, so the
guard retries 429 / 5xx); 401 / 403 → GrantRefused (the token keeper refreshes once), another
refusal → ProviderRejected (the job stops and keeps its cursor). Cursors are small JSON
documents (`encode` / `decode`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from integration_service.domain.errors import GrantRefused, ProviderRejected
from integration_service.domain.model import Connection, Credential
from integration_service.sync.ports import SyncContext
from meshkit.resilience import ProviderError


async def request(
    ctx: SyncContext,
    operation: str,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    scope: str | None = None,
    refused_ok: bool = False,
) -> Any:
    """The decoded answer; with `refused_ok` a 4xx answer (not 401/403) is returned too (for
    callers that read per-record errors from it)."""

    async def send(_connection: Connection, credential: Credential) -> Any:
        async def attempt() -> httpx.Response:
            response = await ctx.http.request(
                method,
                url,
                json=json_body,
                params=dict(params or {}),
                headers={
                    "Authorization": f"Bearer {credential.bearer}",
                    "Accept": "application/json",
                    **(headers or {}),
                },
            )
            if response.status_code == 429 or response.status_code >= 500:
                raise ProviderError(response.status_code, headers=dict(response.headers))
            return response

        response: httpx.Response = await ctx.guard.call(
            operation, attempt, idempotent=True, scope=scope
        )
        if response.status_code in (401, 403):
            raise GrantRefused("unauthorized", f"{ctx.connection.provider.value} refused the token")
        body = response.json() if response.content else {}
        if response.status_code >= 400 and not refused_ok:
            raise ProviderRejected(str(response.status_code), json.dumps(body)[:300])
        return body

    return await ctx.call(send)


def encode(cursor: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in cursor.items() if v not in (None, "")}, sort_keys=True)


def decode(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def earlier(stamp: str, seconds: int = 1) -> str:
    """`stamp` (RFC 3339) moved back: providers compare changed-since strictly and in whole
    seconds, so a change in the same second as the bound would be missed; the overlap re-reads
    a few records, which the mirror skips as unchanged."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - timedelta(seconds=seconds)).isoformat()


def _moment(stamp: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Bound:
    """An incremental cursor's lower bound: the newest change time read (`since`) and the
    records read at exactly that time (`seen`: ids with a digest of their content,
    `version_key`). Providers are asked from a little before it (their comparisons are strict
    or inclusive, and in whole seconds); a record that comes back at or before the bound and
    was already read as it is now is dropped here, so a caught-up reader answers an empty page
    (the engine stops), and a change within the bound's own second is still read."""

    def __init__(self, since: str = "", seen: list[str] | None = None) -> None:
        self.since = since
        self.seen = set(seen or [])
        self.newest = since
        self.at_newest: set[str] = set(self.seen)

    @classmethod
    def of(cls, state: Mapping[str, Any], prefix: str = "") -> Bound:
        return cls(str(state.get(prefix + "since") or ""), list(state.get(prefix + "seen") or []))

    def keep(self, record_id: str, stamp: str) -> bool:
        """Whether a record read is new to this bound (and note its time)."""
        moment, since = _moment(stamp), _moment(self.since)
        if (
            since is not None
            and moment is not None
            and (moment < since or (moment == since and record_id in self.seen))
        ):
            return False
        newest = _moment(self.newest)
        if moment is not None and (newest is None or moment > newest):
            self.newest, self.at_newest = stamp, {record_id}
        elif moment is not None and newest is not None and moment == newest:
            self.at_newest.add(record_id)
        return True

    def state(self, prefix: str = "") -> dict[str, Any]:
        """The bound for the next run: the newest time read and the ids read at it."""
        return {prefix + "since": self.newest, prefix + "seen": sorted(self.at_newest)[:2000]}

    def current(self, prefix: str = "") -> dict[str, Any]:
        """This run's bound (unchanged while its pages are read)."""
        return {prefix + "since": self.since, prefix + "seen": sorted(self.seen)}


def resume(state: Mapping[str, Any]) -> Bound:
    """The bound of a run from its cursor (with what the run's earlier pages read)."""
    bound = Bound.of(state)
    if state.get("max"):
        bound.newest = str(state["max"])
        bound.at_newest = set(state.get("maxseen") or [])
    return bound


def mid(bound: Bound, **page: Any) -> str:
    """The cursor of the next page of this run."""
    return encode(
        {
            **bound.current(),
            "max": bound.newest,
            "maxseen": sorted(bound.at_newest)[:2000],
            **page,
        }
    )


def end(bound: Bound) -> str:
    """The cursor the next run starts from."""
    return encode(bound.state())


def version_key(record_id: str, record: Any) -> str:
    """A record's id with a digest of its content, as `Bound` keeps it: a record read again
    unchanged is dropped, one changed within the bound's second is not."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    return f"{record_id}:{digest[:16]}"
