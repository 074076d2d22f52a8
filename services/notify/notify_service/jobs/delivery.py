"""Delivery workers: `meshkit.jobs.PollingWorker`s running delivery rounds
(usecases/delivery.py). Several per process and any number of replicas share the queue (SKIP
LOCKED claims with leases). An idle worker waits up to NOTIFY_WORKER_POLL_S, or until
SendNotification in this process sets the wake event."""

from __future__ import annotations

import asyncio

from meshkit.jobs import PollingWorker
from notify_service.usecases.delivery import Delivery


class Deliverer(PollingWorker):
    def __init__(
        self, name: str, delivery: Delivery, *, poll_s: float, wake: asyncio.Event
    ) -> None:
        super().__init__(name, self.step, idle_s=poll_s, wake=wake)
        self._delivery = delivery

    async def step(self) -> bool:
        """One round; True when it claimed work (look again at once)."""
        return await self._delivery.round(self.name) > 0
