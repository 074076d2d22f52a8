"""Routing a service's outbox events to the services that act on them (the relay's handler).

A service declares what its events make other services do, as a table of routes — event type
(a contract message) → one or more named actions:

    routes = [
        Route(PaymentSucceeded, "nft.MintTickets", actions.mint_tickets),
        Route(PaymentRefunded, "nft.RevokeTicket", actions.revoke_tickets),
        Route(PaymentRefunded, "notify.refund_issued", actions.refund_message),
    ]
    add_event_relay(kit, EventRouter(routes, registry=kit.registry, relay="payment"), settings)

`add_event_relay` runs an `OutboxRelay` (meshkit.outbox) whose handler is the router. For one
event the router:

* unpacks its `EventEnvelope` and payload (an event that is not one can never be delivered:
  `Undeliverable`);
* sets the event's request id (that of the RPC which caused it, else the event id) and continues
  the event's trace (`meshkit.tracing.continue_trace` with the envelope's traceparent: a span
  of this relay in the producer's trace), so the calls it makes — and the consumer's work and
  log lines — join the work that caused the event;
* runs every route of the event's type, at once. An action calls a consumer's RPC with an
  idempotency key from `delivery.key(*parts)`: a UUID derived from the event id, the route name
  and the parts (e.g. a ticket id), so one event can make several calls, each with its own key,
  and a redelivered event makes the same calls with the same keys (the consumer answers them
  from its idempotency store). `each(items, call)` makes one call per item at once;
* settles the outcome. Every route done → delivered. A consumer's permanent refusal
  (INVALID_ARGUMENT, FAILED_PRECONDITION, or an action raising `Undeliverable`) →
  `Undeliverable`: the relay dead-letters the event at once with the refusal as its reason.
  Anything else (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, NOT_FOUND — e.g. a revoke that
  overtook its mint —, a bug) → `RouteFailed`, and the relay retries the whole event with its
  backoff; when another route was refused in the same attempt, the retry runs it again and the
  consumer repeats its stored refusal, so the event ends dead-lettered with that reason;
* an event type without a route is delivered as a no-op, counted in
  `outbox_unrouted_events_total{relay,event_type}`.

An action with nothing to do (e.g. a buyer without an email address or phone number) calls
`delivery.skip(why)`: logged, counted as `skipped`, not an error.

Metrics: `outbox_route_deliveries_total{relay,route,outcome}` per route and attempt — delivered,
skipped, failed (to be retried), dead_lettered (refused, or failed on the last attempt) — and
`outbox_route_seconds{relay,route}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import Field

from meshkit.context import request_id_var
from meshkit.events import envelope_of, unpack_event
from meshkit.outbox import OutboxEvent, OutboxRelay, Undeliverable
from meshkit.settings import KitSettings
from meshkit.tracing import continue_trace
from tickettoken.common.v1 import common_pb2

if TYPE_CHECKING:
    from meshkit.server import Kit

__all__ = [
    "PERMANENT_CODES",
    "Delivery",
    "EventRouter",
    "RelaySettings",
    "Route",
    "RouteFailed",
    "RouteMetrics",
    "add_event_relay",
    "describe",
    "each",
    "idempotency_key",
    "refusal",
]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Message)
T = TypeVar("T")

PERMANENT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})
"""The codes by which a consumer refuses a request for good: retrying the same request (and an
event always makes the same requests) cannot change the answer."""

_KEY_NAMESPACE = uuid.UUID("8f0c9a53-6a0e-4f1e-b6c4-6c1b0d2e7a41")
_MAX_REASON = 1500


def idempotency_key(event_id: str, route: str, *parts: str) -> str:
    """The idempotency key of one call a route makes for an event: stable for the same
    (event, route, parts), distinct otherwise."""
    return str(uuid.uuid5(_KEY_NAMESPACE, "\x00".join([event_id, route, *parts])))


# -- errors --------------------------------------------------------------------------------------


class RouteFailed(Exception):
    """A route's delivery failed in a way a retry may fix; the message names the route and the
    consumer's answer (it becomes the outbox row's last error)."""


def describe(err: grpc.aio.AioRpcError) -> str:
    """A consumer's error in one line: code, ErrorInfo reason, message and field violations."""
    reason = ""
    violations: list[str] = []
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            break
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                reason = info.reason
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                violations += [f"{v.field}: {v.description}" for v in bad.field_violations]
    code = err.code()
    text = f"{code.name if code else 'UNKNOWN'}{' ' + reason if reason else ''}: {err.details()}"
    if violations:
        text += f" [{'; '.join(violations)}]"
    return text[:_MAX_REASON]


def refusal(exc: BaseException) -> str | None:
    """The reason when `exc` is a permanent refusal (see PERMANENT_CODES, `Undeliverable`);
    None when a retry may help."""
    if isinstance(exc, Undeliverable):
        return exc.reason
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in PERMANENT_CODES:
        return describe(exc)
    return None


def _summary(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return describe(exc)
    if isinstance(exc, TimeoutError):
        return "TimeoutError"
    return f"{type(exc).__name__}: {exc}"[:_MAX_REASON]


def _decisive(errors: Sequence[Exception]) -> Exception:
    """The error that decides an attempt: one a retry may fix before a refusal."""
    return next((e for e in errors if refusal(e) is None), errors[0])


async def each(items: Iterable[T], call: Callable[[T], Awaitable[object]]) -> None:
    """`call(item)` for every item at once; every call finishes before this returns. When some
    fail, raises the failure that decides the event: one a retry may fix before a refusal (the
    calls that succeeded are answered from the consumer's idempotency store next time)."""
    results = await asyncio.gather(*(call(item) for item in items), return_exceptions=True)
    errors: list[Exception] = []
    for result in results:
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            errors.append(result)
    if errors:
        raise _decisive(errors)


# -- routes --------------------------------------------------------------------------------------


class Delivery:
    """One route's delivery of one event: its envelope, and the idempotency keys of its calls."""

    __slots__ = ("attempt", "envelope", "route", "skipped")

    def __init__(self, envelope: common_pb2.EventEnvelope, route: str, attempt: int) -> None:
        self.envelope = envelope
        self.route = route
        self.attempt = attempt
        """1 for the first delivery of the event."""
        self.skipped: str | None = None

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    def key(self, *parts: str) -> str:
        """The idempotency key of this route's call for `parts` (none: the route's only call)."""
        return idempotency_key(self.envelope.event_id, self.route, *parts)

    def skip(self, why: str) -> None:
        """Record that this route has nothing to deliver for the event (not an error)."""
        self.skipped = why
        logger.info(
            "route has nothing to deliver",
            extra={
                "route": self.route,
                "event_id": self.envelope.event_id,
                "event_type": self.envelope.event_type,
                "why": why,
            },
        )


Action = Callable[[E, Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route(Generic[E]):
    """Events of type `event` run `action` (named `name` in metrics, logs and keys: keep a
    route's name once events were delivered with it, or redeliveries get new keys)."""

    event: type[E]
    name: str
    action: Action[E]


class RouteMetrics:
    """The routes' metrics on one registry (shared by every router using it)."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RouteMetrics] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "outbox_route_deliveries_total",
            "Route deliveries by outcome, per attempt: delivered, skipped (nothing to do), "
            "failed (the event will be retried), dead_lettered (refused by the consumer, or "
            "failed on the last attempt).",
            ["relay", "route", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "outbox_route_seconds",
            "Time one route took to deliver one event (its calls included).",
            ["relay", "route"],
            registry=registry,
        )
        self.unrouted = Counter(
            "outbox_unrouted_events_total",
            "Events delivered as a no-op because no route takes their type.",
            ["relay", "event_type"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> RouteMetrics:
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics


_OUTCOMES = ("delivered", "skipped", "failed", "dead_lettered")


class EventRouter:
    """The outbox handler that delivers events along a route table (module doc).

    `max_attempts` is the relay's (set by `add_event_relay`): a failure on the last attempt is
    counted as dead_lettered.
    """

    def __init__(
        self,
        routes: Iterable[Route[Any]],
        *,
        registry: CollectorRegistry,
        relay: str = "outbox",
        max_attempts: int | None = None,
    ) -> None:
        self.relay = relay
        self.max_attempts = max_attempts
        self.metrics = RouteMetrics.for_registry(registry)
        self._table: dict[str, list[Route[Any]]] = {}
        names: set[str] = set()
        for route in routes:
            if route.name in names:
                raise ValueError(f"route {route.name!r} is declared twice")
            names.add(route.name)
            self._table.setdefault(route.event.DESCRIPTOR.full_name, []).append(route)
            for outcome in _OUTCOMES:  # exported at 0 from the start
                self.metrics.deliveries.labels(relay, route.name, outcome)

    @property
    def event_types(self) -> list[str]:
        """Full names of the event types with routes."""
        return sorted(self._table)

    def routes_for(self, event_type: str) -> list[Route[Any]]:
        return list(self._table.get(event_type, ()))

    async def __call__(self, event: OutboxEvent) -> None:
        try:
            envelope = envelope_of(event)
        except (TypeError, DecodeError) as exc:
            raise Undeliverable(f"not an event envelope: {exc}") from exc
        routes = self._table.get(envelope.event_type)
        if not routes:
            self.metrics.unrouted.labels(self.relay, envelope.event_type).inc()
            return
        try:
            payload = unpack_event(envelope, routes[0].event)
        except (TypeError, DecodeError) as exc:
            raise Undeliverable(f"payload is not a {envelope.event_type}: {exc}") from exc
        attempt = event.attempts + 1
        token = request_id_var.set(envelope.request_id or envelope.event_id)
        try:
            with continue_trace(
                envelope.trace.traceparent or None,
                envelope.trace.tracestate or None,
                name=f"deliver {envelope.event_type}",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "outbox",
                    "messaging.message.id": envelope.event_id,
                    "messaging.destination.name": envelope.event_type,
                    "outbox.relay": self.relay,
                    "outbox.attempt": attempt,
                },
            ):
                results = await asyncio.gather(
                    *(self._run(route, payload, envelope, attempt) for route in routes),
                    return_exceptions=True,
                )
                self._settle(envelope, routes, results, attempt)
        finally:
            request_id_var.reset(token)

    async def _run(
        self, route: Route[Any], payload: Message, envelope: common_pb2.EventEnvelope, n: int
    ) -> str:
        delivery = Delivery(envelope, route.name, n)
        started = time.perf_counter()
        try:
            await route.action(payload, delivery)
        finally:
            self.metrics.seconds.labels(self.relay, route.name).observe(
                time.perf_counter() - started
            )
        return "skipped" if delivery.skipped is not None else "delivered"

    def _settle(
        self,
        envelope: common_pb2.EventEnvelope,
        routes: Sequence[Route[Any]],
        results: Sequence[str | BaseException],
        attempt: int,
    ) -> None:
        failed: list[tuple[Route[Any], Exception]] = []
        for route, result in zip(routes, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancelled: the relay's timeout or shutdown
                failed.append((route, result))
            else:
                self.metrics.deliveries.labels(self.relay, route.name, result).inc()
        if not failed:
            return
        retryable = [(r, e) for r, e in failed if refusal(e) is None]
        last = self.max_attempts is not None and attempt >= self.max_attempts
        outcome = "dead_lettered" if not retryable or last else "failed"
        for route, _ in failed:
            self.metrics.deliveries.labels(self.relay, route.name, outcome).inc()
        log = {
            "relay": self.relay,
            "event_id": envelope.event_id,
            "event_type": envelope.event_type,
            "attempt": attempt,
            "routes": {r.name: _summary(e) for r, e in failed},
        }
        if retryable:
            logger.warning("event delivery failed on some routes; it will be retried", extra=log)
            route, exc = retryable[0]
            raise RouteFailed(f"{route.name}: {_summary(exc)}") from exc
        logger.error("event refused by its consumer; dead-lettered", extra=log)
        raise Undeliverable("; ".join(f"{r.name}: {refusal(e)}" for r, e in failed))


# -- wiring --------------------------------------------------------------------------------------


class RelaySettings(KitSettings):
    """The kit's settings plus those of an event relay: the base of a service's settings when it
    runs one."""

    relay_enabled: bool = Field(
        True,
        description="Deliver this service's outbox events (false: they are staged but not "
        "delivered by this process, e.g. to pause deliveries or to measure the service alone).",
    )
    relay_batch: int = Field(50, ge=1, description="Outbox events one relay claims at a time.")
    relay_concurrency: int = Field(
        8,
        ge=1,
        description="Events of a batch delivered at once (events of one aggregate one after "
        "another, in order).",
    )
    relay_poll_s: float = Field(
        0.2, gt=0, description="How often an idle relay looks for new events."
    )
    relay_max_attempts: int = Field(
        12,
        ge=1,
        description="Delivery attempts before an event is dead-lettered (a consumer's "
        "INVALID_ARGUMENT / FAILED_PRECONDITION dead-letters it at the first).",
    )
    relay_backoff_base_s: float = Field(0.5, gt=0, description="First retry delay (then doubling).")
    relay_backoff_max_s: float = Field(
        300.0, gt=0, description="Cap of the retry delay (full jitter below it)."
    )
    relay_call_timeout_s: float = Field(
        15.0, gt=0, description="Deadline of one call the relay makes to a consumer."
    )
    relay_handler_timeout_s: float = Field(
        60.0, gt=0, description="Longest one event's delivery (all its calls) may take."
    )


def add_event_relay(kit: Kit, router: EventRouter, settings: RelaySettings) -> OutboxRelay | None:
    """Run the service's outbox relay with `router` as its handler, configured by `settings`
    (none when RELAY_ENABLED is false)."""
    router.max_attempts = settings.relay_max_attempts
    if not settings.relay_enabled:
        return None
    return kit.add_outbox_relay(
        router,
        name=f"{router.relay}-relay",
        batch_size=settings.relay_batch,
        concurrency=settings.relay_concurrency,
        poll_interval=settings.relay_poll_s,
        max_attempts=settings.relay_max_attempts,
        base_backoff=settings.relay_backoff_base_s,
        max_backoff=settings.relay_backoff_max_s,
        handler_timeout=settings.relay_handler_timeout_s,
    )
