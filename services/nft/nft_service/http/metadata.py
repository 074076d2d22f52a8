"""The public metadata routes: the content-addressed JSON documents the on-chain uris point to.

  GET /m/{address}           address = base58 of the document's sha256 (the uri of every ticket
                             when NFT_METADATA_BASE_URL is the local default, `.../m`; a public
                             base URL routes here)
  GET /metadata/{sha}.json   sha = the document's sha256 in hex (the uri form of tickets minted
                             with the earlier layout)

Both serve the same stored documents. The bytes never change for a given address, so they are
cacheable forever.
"""

from __future__ import annotations

import re

from aiohttp import web

from nft_service.domain.metadata import sha_of_address
from nft_service.usecases.tickets import Tickets

ROUTE = "/m/{address}"
LEGACY_ROUTE = "/metadata/{sha}.json"
_SHA = re.compile(r"^[0-9a-f]{64}$")


class MetadataRoute:
    def __init__(self, tickets: Tickets) -> None:
        self._tickets = tickets

    async def by_address(self, request: web.Request) -> web.StreamResponse:
        address = request.match_info["address"]
        sha = sha_of_address(address) if len(address) <= 44 else None
        if sha is None:
            raise web.HTTPNotFound()
        return await self._serve(request, sha, etag=address)

    async def by_sha(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        if not _SHA.match(sha):
            raise web.HTTPNotFound()
        return await self._serve(request, sha, etag=sha)

    async def _serve(self, request: web.Request, sha: str, *, etag: str) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == f'"{etag}"':
            return web.Response(status=304, headers={"ETag": f'"{etag}"'})
        body = await self._tickets.metadata_document(sha)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=body,
            content_type="application/json",
            charset="utf-8",
            headers={
                "ETag": f'"{etag}"',
                "Cache-Control": "public, max-age=31536000, immutable",
                "Access-Control-Allow-Origin": "*",
            },
        )
