"""The periodic reconciliation run, on one replica at a time (a kit leased job: a Redis lease
held, renewed while the run lasts, released when it ends)."""

from __future__ import annotations

from meshkit.jobs import LeasedJob
from meshkit.server import Kit
from payment_service.usecases.reconciliation import Reconciliation

NAME = "reconciliation"
# A run checks up to `reconcile_batch` payments at Stripe; the lease is renewed every third of
# this while it lasts, so it only bounds how long a crashed holder blocks the next run.
LEASE_S = 60.0


def schedule(kit: Kit, reconciliation: Reconciliation, interval_s: float) -> LeasedJob | None:
    """Run reconciliation every `interval_s` seconds (0: never)."""
    if interval_s <= 0:
        return None
    return kit.add_leased_job(NAME, interval_s, reconciliation.periodic, lease_s=LEASE_S)
