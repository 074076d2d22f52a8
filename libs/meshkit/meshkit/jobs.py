"""Background workers with a common shape: `run()` until `stop()`, finishing the current step.

The server starts every registered worker after the gRPC server is up and stops them after the
RPCs have drained, so a relay or a purge never sees its pool closed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

_log = logging.getLogger("meshkit.jobs")


class Worker(Protocol):
    """Anything the server can run in the background (e.g. an outbox relay)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class PeriodicJob:
    """Calls `fn` every `interval` seconds until stopped; failures are logged, never fatal."""

    def __init__(self, name: str, interval: float, fn: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._interval = interval
        self._fn = fn
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._fn()
            except Exception:
                _log.exception("periodic job failed", extra={"job": self.name})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    def stop(self) -> None:
        self._stopping.set()
