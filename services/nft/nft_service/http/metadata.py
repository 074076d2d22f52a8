"""The public metadata route: `GET /metadata/{sha}.json` serves the content-addressed JSON the
on-chain uri points to. The bytes never change for a given sha, so they are cacheable forever."""

from __future__ import annotations

import re

from aiohttp import web

from nft_service.usecases.tickets import Tickets

ROUTE = "/metadata/{sha}.json"
_SHA = re.compile(r"^[0-9a-f]{64}$")


class MetadataRoute:
    def __init__(self, tickets: Tickets) -> None:
        self._tickets = tickets

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        if not _SHA.match(sha):
            raise web.HTTPNotFound()
        if request.headers.get("If-None-Match") == f'"{sha}"':
            return web.Response(status=304, headers={"ETag": f'"{sha}"'})
        body = await self._tickets.metadata_document(sha)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=body,
            content_type="application/json",
            charset="utf-8",
            headers={
                "ETag": f'"{sha}"',
                "Cache-Control": "public, max-age=31536000, immutable",
                "Access-Control-Allow-Origin": "*",
            },
        )
