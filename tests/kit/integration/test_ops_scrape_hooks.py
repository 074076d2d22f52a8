"""/metrics awaits the scrape hooks first (figures read from elsewhere are fresh), bounded: a hook
that hangs or fails never keeps the page from being served."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import CollectorRegistry, Gauge

from meshkit.ops import OpsServer


async def _page(server: OpsServer) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.local_url("/metrics")) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_a_scrape_shows_what_its_hooks_just_read() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("rows_in_table", "Rows, read at scrape time.", registry=registry)
    reads = 0

    async def read_table() -> None:
        nonlocal reads
        await asyncio.sleep(0.01)  # the database round trip
        reads += 1
        gauge.set(reads * 10)

    server = OpsServer(registry, host="127.0.0.1", port=0, ready=lambda: True)
    server.scrape_hooks.append(read_table)
    await server.start()
    try:
        assert "rows_in_table 10.0" in await _page(server)
        assert "rows_in_table 20.0" in await _page(server)
    finally:
        await server.stop()


async def test_a_hung_or_failing_hook_does_not_hold_the_page() -> None:
    registry = CollectorRegistry()
    Gauge("always_there", "A plain gauge.", registry=registry).set(1)
    release = asyncio.Event()

    async def hangs() -> None:
        await release.wait()

    async def fails() -> None:
        raise RuntimeError("database down")

    server = OpsServer(registry, host="127.0.0.1", port=0, ready=lambda: True)
    server.scrape_hooks.extend([hangs, fails])
    server.scrape_timeout_s = 0.2
    await server.start()
    try:
        assert "always_there 1.0" in await asyncio.wait_for(_page(server), 5)
    finally:
        release.set()
        await server.stop()
