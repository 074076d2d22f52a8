"""Delivery rounds: claim due notifications, re-check consent, send each exactly once where the
providers allow it, record the outcomes with their events.

One round of a worker (`Delivery.round`):

  1. claim up to N due notifications (priority, then due time) with a lease
     (store/notifications.py);
  2. consent again, now: the suppression list and preferences may have changed since the
     request (→ SUPPRESSED), and quiet hours may have begun (→ back to QUEUED until they end);
  3. every send is recorded BEFORE it is made — SENDING, the provider, the attempt count — in
     one statement for the round, only for rows whose lease we still hold;
  4. sends run concurrently (bounded), each through its provider's guard (rate limit, breaker,
     retries). A provider that fails after its retries, or whose breaker is open, hands the
     message to the next provider of the channel (recorded before that call too);
  5. the outcomes are written in one transaction with their events (NotificationSent /
     NotificationFailed) and any suppression a hard bounce calls for; each update is
     conditional on our lease and on the status machine.

Exactly once, and where it cannot be: the record-before-send makes every attempt visible. A
worker killed after a provider accepted a message but before step 5 committed leaves it SENDING;
once the lease expires another worker sends it again — with the same Message-ID, the same
X-Notification-Id header and the same SendGrid custom_args — so the copies are one message to
every system that looks (mail clients thread and collapse on Message-ID; our receipts match on
the notification id). That window (provider accepted → our commit, milliseconds) and a line that
drops after the message was handed over are the only ways to a second copy, and each costs at
most one: the copy that follows is recorded SENT before anything else happens to it.

Traces: a round serves many requests, so it runs in the worker step's own (log-only) trace; what
is done for one notification runs in a span of the trace of the request that queued it (kept
with it, usecases/sending.py) — its send when it goes alone (a provider call per message, or a
session of one), its failover, the log line of its outcome — and its event carries that trace
(usecases/events.py), so a purchase's email can be followed in the purchase's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from meshkit.db import Database
from meshkit.events import Staged
from notify_service.adapters.base import (
    Accepted,
    OutboundEmail,
    OutboundSms,
    Sender,
    SendError,
)
from notify_service.domain import preferences as consent_rules
from notify_service.domain.addresses import AddressRules
from notify_service.domain.model import Channel, Notification, Status, SuppressionReason
from notify_service.domain.retry import FailureKind, RetryPolicy, SendFailure, decide
from notify_service.store import notifications as store
from notify_service.store import preferences, suppressions
from notify_service.usecases import consent
from notify_service.usecases.events import NotifyEvents, traced
from notify_service.usecases.links import Links
from notify_service.usecases.metrics import NotifyMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    batch: int
    lease_s: float
    send_concurrency: int
    """Provider calls in flight at once (a session of `per_call` messages counts once)."""
    per_call: int
    """Messages per provider call where the provider works in sessions (SMTP)."""
    retry: RetryPolicy
    from_email: str
    reply_to: str = ""
    address_rules: AddressRules = field(default_factory=AddressRules)


@dataclass(slots=True)
class _Result:
    notification: Notification
    provider: str = ""
    accepted: Accepted | None = None
    failures: list[SendFailure] = field(default_factory=list)


class Delivery:
    """Delivery rounds (module doc). Several workers, in one process or many, share the queue."""

    def __init__(
        self,
        *,
        db: Database,
        senders: Mapping[Channel, Sequence[Sender]],
        events: NotifyEvents,
        metrics: NotifyMetrics,
        links: Links,
        rules: DeliveryRules,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._senders = senders
        self._events = events
        self._metrics = metrics
        self._links = links
        self._rules = rules
        self._rng = rng or random.Random()
        self._clock = clock
        self._gate = asyncio.Semaphore(max(1, rules.send_concurrency))

    async def round(self, worker: str = "") -> int:
        """One round; returns how many notifications it claimed."""
        token = uuid.uuid4()
        async with self._db.acquire() as conn:
            claimed = await store.claim(conn, self._rules.batch, token, self._rules.lease_s)
        if not claimed:
            return 0
        decided: dict[uuid.UUID, _Result | store.NotSent] = {}
        try:
            await self._process(claimed, token, decided)
        finally:
            # Shielded: a cancellation (shutdown) must not lose what providers already accepted.
            await asyncio.shield(self._finish(claimed, token, decided, worker))
        return len(claimed)

    # -- 2. consent ---------------------------------------------------------------------------
    async def _consent(
        self, claimed: Sequence[Notification], out: dict[uuid.UUID, _Result | store.NotSent]
    ) -> list[Notification]:
        now = self._clock()
        async with self._db.acquire() as conn:
            prefs = await preferences.get_many(conn, [n.user_id for n in claimed])
            found = {}
            for channel in {n.channel for n in claimed}:
                found[channel] = await suppressions.find(
                    conn, channel, [n.destination for n in claimed if n.channel is channel]
                )
        ready = []
        for n in claimed:
            if not self._senders.get(n.channel):
                out[n.id] = store.NotSent(
                    n.id,
                    Status.DEAD_LETTERED,
                    0.0,
                    "channel_not_configured",
                    f"no provider is configured for {n.channel.value} any more",
                )
                continue
            decision = consent_rules.decide(
                preferences=prefs.get(n.user_id),
                suppression=found[n.channel].get(suppressions.key(n.channel, n.destination)),
                channel=n.channel,
                category=n.category,
                priority=n.priority,
                when=now,
                recipient_time_zone=n.time_zone,
            )
            if decision.verdict is consent_rules.Verdict.SUPPRESS:
                out[n.id] = store.NotSent(
                    n.id, Status.SUPPRESSED, 0.0, decision.reason, "not sent: " + decision.reason
                )
            elif decision.verdict is consent_rules.Verdict.DEFER:
                assert decision.until is not None
                delay = max(0.0, (decision.until - now).total_seconds())
                out[n.id] = store.NotSent(
                    n.id, Status.QUEUED, delay, "", "", deferred_reason=decision.reason
                )
            else:
                ready.append(n)
        return ready

    # -- 3-4. record, then send -----------------------------------------------------------------
    async def _process(
        self,
        claimed: Sequence[Notification],
        token: uuid.UUID,
        out: dict[uuid.UUID, _Result | store.NotSent],
    ) -> None:
        ready = await self._consent(claimed, out)
        if not ready:
            return
        first = [
            store.Sending(n.id, self._senders[n.channel][0].name, 0, new_attempt=True)
            for n in ready
        ]
        async with self._db.acquire() as conn:
            allowed = await store.mark_sending(conn, token, first)
        sendable = [n for n in ready if n.id in allowed]
        chunks: list[list[Notification]] = []
        for channel in Channel:
            group = [n for n in sendable if n.channel is channel]
            if not group:
                continue
            size = max(1, self._rules.per_call) if self._senders[channel][0].sessions else 1
            chunks += [group[i : i + size] for i in range(0, len(group), size)]
        done = await asyncio.gather(
            *(self._deliver(chunk, token) for chunk in chunks), return_exceptions=True
        )
        for chunk, results in zip(chunks, done, strict=True):
            if isinstance(results, BaseException):
                if isinstance(results, asyncio.CancelledError):
                    continue  # shutdown: released below, still SENDING
                logger.error("delivery failed unexpectedly", exc_info=results)
                failure = SendFailure(FailureKind.UNKNOWN, "internal", type(results).__name__)
                results = [_Result(n, failures=[failure]) for n in chunk]
            for result in results:
                out[result.notification.id] = result

    async def _deliver(self, chunk: Sequence[Notification], token: uuid.UUID) -> list[_Result]:
        """Send a chunk through the channel's first provider in one call (a session, where the
        provider has them), then hand each message that failed there, one by one, to the next
        providers in order."""
        senders = self._senders[chunk[0].channel]
        first = senders[0]
        # A chunk of one is sent in its notification's trace; a session of several in the
        # round's (each message's outcome is then logged in its own).
        with traced(chunk[0], "send") if len(chunk) == 1 else contextlib.nullcontext():
            async with self._gate:
                outcomes = await first.send_many([self._outbound(n) for n in chunk])
        results = []
        for n, outcome in zip(chunk, outcomes, strict=True):
            result = _Result(n, provider=first.name)
            if isinstance(outcome, Accepted):
                result.accepted = outcome
                self._metrics.sends.labels(first.name, "sent").inc()
            else:
                result.failures.append(outcome)
                self._metrics.sends.labels(first.name, outcome.kind.value).inc()
            results.append(result)
        await asyncio.gather(
            *(
                self._fail_over(r, senders, token)
                for r in results
                if r.accepted is None and r.failures[-1].kind.try_next_provider
            )
        )
        return results

    async def _fail_over(
        self, result: _Result, senders: Sequence[Sender], token: uuid.UUID
    ) -> None:
        with traced(result.notification, "fail over"):
            await self._fail_over_traced(result, senders, token)

    async def _fail_over_traced(
        self, result: _Result, senders: Sequence[Sender], token: uuid.UUID
    ) -> None:
        n = result.notification
        for index in range(1, len(senders)):
            sender, previous = senders[index], senders[index - 1].name
            async with self._db.acquire() as conn:
                held = await store.mark_sending(
                    conn, token, [store.Sending(n.id, sender.name, index, False)]
                )
            if not held:
                return  # our lease is gone: the new holder decides
            self._metrics.failovers.labels(previous, sender.name).inc()
            logger.info(
                "failing over",
                extra={
                    "notification_id": str(n.id),
                    "from_provider": previous,
                    "to_provider": sender.name,
                },
            )
            result.provider = sender.name
            async with self._gate:
                try:
                    result.accepted = await sender.send(self._outbound(n))
                except SendError as exc:
                    result.failures.append(exc.failure)
                    self._metrics.sends.labels(sender.name, exc.failure.kind.value).inc()
                    if not exc.failure.kind.try_next_provider:
                        return
                    continue
            self._metrics.sends.labels(sender.name, "sent").inc()
            result.failures.clear()
            return

    def _outbound(self, n: Notification) -> OutboundEmail | OutboundSms:
        if n.channel is Channel.EMAIL:
            unsubscribe_url = self._links.unsubscribe_url(n.id)
            return OutboundEmail(
                notification_id=str(n.id),
                message_id=n.message_id,
                from_address=self._rules.from_email,
                to_address=n.destination,
                to_name=n.recipient_name,
                subject=n.content.subject,
                text=n.content.body_text,
                html=n.content.body_html,
                reply_to=self._rules.reply_to,
                headers={
                    "List-Unsubscribe": f"<{unsubscribe_url}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    "X-Notification-Id": str(n.id),
                },
                attachments=n.attachments,
            )
        return OutboundSms(
            notification_id=str(n.id),
            to_number=n.destination,
            body=n.content.body_text,
            status_callback=self._links.twilio_status_url(n.id),
        )

    # -- 5. record the outcomes -----------------------------------------------------------------
    def _not_sent(self, result: _Result) -> tuple[store.NotSent, SendFailure | None]:
        n = result.notification
        step = decide(result.failures, n.attempts + 1, self._rules.retry, self._rng)
        suppress = next((f for f in result.failures if f.suppress), None) if step.suppress else None
        return (
            store.NotSent(
                n.id,
                step.status,
                step.delay,
                step.error_code,
                step.error_message,
                deferred_reason="retry" if step.status is Status.QUEUED else "",
            ),
            suppress,
        )

    async def _finish(
        self,
        claimed: Sequence[Notification],
        token: uuid.UUID,
        decided: dict[uuid.UUID, _Result | store.NotSent],
        worker: str,
    ) -> None:
        sent: list[store.Sent] = []
        not_sent: list[store.NotSent] = []
        to_suppress: list[tuple[Notification, SendFailure]] = []
        for item in decided.values():
            if isinstance(item, store.NotSent):
                not_sent.append(item)
            elif item.accepted is not None:
                sent.append(
                    store.Sent(
                        item.notification.id, item.provider, item.accepted.provider_message_id
                    )
                )
            elif item.failures:
                row, suppress = self._not_sent(item)
                not_sent.append(row)
                if suppress is not None:
                    to_suppress.append((item.notification, suppress))

        async def write(conn: asyncpg.Connection) -> list[Notification]:
            rows = await store.mark_sent(conn, token, sent)
            rows += await store.mark_not_sent(conn, token, not_sent)
            staged: list[Staged] = []
            for n in rows:
                event = self._events.for_status(n)
                if event is not None:
                    staged.append(event)
            await self._events.stage(conn, staged)
            for n, failure in to_suppress:
                reason = (
                    SuppressionReason.SMS_STOP
                    if failure.code == "twilio_21610"
                    else SuppressionReason.HARD_BOUNCE
                )
                await consent.suppress(
                    conn, n.channel, n.destination, reason, failure.code, self._rules.address_rules
                )
            return rows

        if sent or not_sent:
            written = await self._db.run_in_tx(write)
            for n in written:
                with traced(n, "delivery outcome", worker):
                    self._observe(n, worker)
            lost = {s.notification_id for s in sent} | {o.notification_id for o in not_sent}
            lost -= {n.id for n in written}
            if lost:
                logger.warning(
                    "delivery lease lost; outcomes left to the new holder",
                    extra={"worker": worker, "notifications": sorted(map(str, lost))},
                )
        rest = [n.id for n in claimed if n.id not in decided]
        if rest:
            with contextlib.suppress(Exception):
                async with self._db.acquire() as conn:
                    await store.release(conn, token, rest)

    def _observe(self, n: Notification, worker: str) -> None:
        self._metrics.outcomes.labels(n.channel.value, n.status.value).inc()
        extra = {
            "worker": worker,
            "notification_id": str(n.id),
            "channel": n.channel.value,
            "provider": n.provider,
            "destination": n.destination_masked,
            "attempts": n.attempts,
        }
        if n.status is Status.SENT:
            if n.sent_at is not None:
                self._metrics.queue_seconds.observe(
                    max(0.0, (n.sent_at - n.available_at).total_seconds())
                )
            logger.info("notification sent", extra=extra)
            return
        final = n.status is not Status.QUEUED
        (logger.warning if final and n.status is not Status.SUPPRESSED else logger.info)(
            "notification not sent",
            extra={**extra, "status": n.status.value, "error": n.error_code},
        )
