"""Off-chain metadata documents (`nft_metadata`): content-addressed JSON, keyed by the sha256 of
the exact bytes served, so a document never changes once stored."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def insert(conn: asyncpg.Connection, documents: Sequence[tuple[str, bytes]]) -> None:
    """Store (sha, body) documents in one statement; one that exists already is the same
    bytes, kept as is."""
    await conn.execute(
        "INSERT INTO nft_metadata (sha, body) SELECT * FROM unnest($1::text[], $2::bytea[]) "
        "ON CONFLICT (sha) DO NOTHING",
        [sha for sha, _ in documents],
        [body for _, body in documents],
    )


async def body(conn: asyncpg.Connection, sha: str) -> bytes | None:
    value = await conn.fetchval("SELECT body FROM nft_metadata WHERE sha = $1", sha)
    return bytes(value) if value is not None else None
