"""Outbound gRPC client kit: channels and typed stubs for calling the other mesh services.

Every channel is built the same way:

* service config with a `retryPolicy` for UNAVAILABLE (the only code that says "the request was
  not processed, try again": mesh mutating RPCs carry idempotency keys, so a retry is safe) and
  `retryThrottling` (gRPC A6: retries stop when more than half the recent calls failed), so a
  struggling service is not hit with retries on top of its load;
* `round_robin` load balancing (gRPC A27 `loadBalancingConfig`): the channel connects to every
  address its target resolves to and spreads calls over them. In Kubernetes the targets are
  headless Services (`dns:///nft-headless:50052` resolves to every ready pod); servers close
  connections after GRPC_MAX_CONNECTION_AGE_S, and each GOAWAY makes the channel resolve the
  name again, so replicas the autoscaler added start receiving calls (deploy/README.md, "Load
  balancing"). A target with one address (a ClusterIP Service, 127.0.0.1) behaves as before;
* keepalive pings every 30 s, which the kit's servers accept (they allow one per 10 s), so idle
  channels notice dead peers without being sent GOAWAY `too_many_pings`;

and one client interceptor on every call (unary and server-streaming):

* deadline — gRPC does not propagate deadlines: the inbound call's remaining time (less a
  margin) caps the outbound timeout; with no inbound deadline (or outside an RPC, e.g. an outbox
  relay) the default timeout applies, so no call waits forever; no time left → DEADLINE_EXCEEDED
  without sending anything;
* `x-request-id` — the current request id (or a new one), so logs join up across services;
* `traceparent` (+ `tracestate`) — the current span context (the RPC being served, or the
  background work under `meshkit.tracing.continue_trace`), so the callee continues the trace;
  left alone when the caller set one;
* `authorization` — a short-lived service token (`sub = svc:<caller>`, audience
  `tickettoken.<callee>`), minted once and reused until close to expiry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from meshkit.context import current_call, current_request_id
from meshkit.errors import DeadlineExceeded
from meshkit.tracing import TRACEPARENT, trace_headers
from tickettoken.integration.v1 import integration_pb2_grpc
from tickettoken.nft.v1 import nft_pb2_grpc
from tickettoken.notify.v1 import notify_pb2_grpc
from tickettoken.payment.v1 import payment_pb2_grpc

__all__ = [
    "KEEPALIVE_OPTIONS",
    "MeshClients",
    "OutboundInterceptor",
    "outbound_timeout",
    "service_config",
]

S = TypeVar("S")

KEEPALIVE_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
)


def service_config(
    *,
    max_attempts: int = 3,
    initial_backoff_s: float = 0.1,
    max_backoff_s: float = 1.0,
    max_tokens: int = 10,
    token_ratio: float = 0.1,
) -> str:
    """The channel's service config JSON: round_robin over the target's addresses, retry
    UNAVAILABLE, throttled per gRPC A6."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{}],  # every method of every service on the channel
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": f"{initial_backoff_s}s",
                        "maxBackoff": f"{max_backoff_s}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
            "retryThrottling": {"maxTokens": max_tokens, "tokenRatio": token_ratio},
        }
    )


def outbound_timeout(explicit: float | None, default: float, margin: float = 0.02) -> float:
    """The timeout of an outbound call: `explicit` or `default`, capped by the inbound deadline.

    DeadlineExceeded when the inbound call has no time left for it.
    """
    timeout = explicit if explicit is not None else default
    call = current_call()
    remaining = call.time_remaining() if call is not None else None
    if remaining is not None:
        left = remaining - margin
        if left <= 0:
            raise DeadlineExceeded(
                "no time left for a downstream call", reason="DEADLINE_PROPAGATED"
            )
        timeout = min(timeout, left)
    return timeout


class OutboundInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    """Deadline, request id, trace context and service token on every outbound call (module
    doc)."""

    def __init__(
        self,
        *,
        audience: str,
        token_for: Callable[[str], str] | None,
        default_timeout_s: float,
        margin_s: float = 0.02,
    ) -> None:
        self._audience = audience
        self._token_for = token_for
        self._default = default_timeout_s
        self._margin = margin_s

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
        if not metadata.get_all("x-request-id"):
            metadata.add("x-request-id", current_request_id() or uuid.uuid4().hex)
        if not metadata.get_all(TRACEPARENT):
            for key, value in trace_headers():
                metadata.add(key, value)
        if self._token_for is not None and not metadata.get_all("authorization"):
            metadata.add("authorization", f"Bearer {self._token_for(self._audience)}")
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=outbound_timeout(details.timeout, self._default, self._margin),
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class MeshClients:
    """Channels (one per callee, opened on first use) and typed stubs for the mesh services.

    `targets` maps a service name (`payment`, `nft`, `notify`, `integration`) to its address
    (`host:port`, `dns:///nft:50052` …); `token_for(audience)` returns a service token (the
    kit passes `Kit.service_token`).
    """

    def __init__(
        self,
        *,
        targets: Mapping[str, str],
        token_for: Callable[[str], str] | None,
        default_timeout_s: float = 5.0,
        deadline_margin_s: float = 0.02,
        config_json: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._targets = dict(targets)
        self._token_for = token_for
        self._default_timeout = default_timeout_s
        self._margin = deadline_margin_s
        self._config = config_json if config_json is not None else service_config()
        self._options = list(options)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        """The channel to `service` (created on first use, shared afterwards)."""
        channel = self._channels.get(service)
        if channel is None:
            try:
                target = self._targets[service]
            except KeyError:
                raise KeyError(f"no gRPC target configured for {service!r}") from None
            interceptor = OutboundInterceptor(
                audience=f"tickettoken.{service}",
                token_for=self._token_for,
                default_timeout_s=self._default_timeout,
                margin_s=self._margin,
            )
            channel = grpc.aio.insecure_channel(
                target,
                options=[
                    ("grpc.service_config", self._config),
                    ("grpc.enable_retries", 1),
                    *KEEPALIVE_OPTIONS,
                    *self._options,
                ],
                interceptors=[interceptor],
            )
            self._channels[service] = channel
        return channel

    def stub(self, service: str, stub_cls: Callable[[grpc.aio.Channel], S]) -> S:
        """A stub of `stub_cls` on the channel to `service`."""
        return stub_cls(self.channel(service))

    @property
    def payment(self) -> payment_pb2_grpc.PaymentServiceAsyncStub:
        return payment_pb2_grpc.PaymentServiceStub(self.channel("payment"))

    @property
    def nft(self) -> nft_pb2_grpc.NftServiceAsyncStub:
        return nft_pb2_grpc.NftServiceStub(self.channel("nft"))

    @property
    def notify(self) -> notify_pb2_grpc.NotifyServiceAsyncStub:
        return notify_pb2_grpc.NotifyServiceStub(self.channel("notify"))

    @property
    def integration(self) -> integration_pb2_grpc.IntegrationServiceAsyncStub:
        return integration_pb2_grpc.IntegrationServiceStub(self.channel("integration"))

    async def close(self, grace: float | None = None) -> None:
        """Close every open channel (in-flight calls get `grace` seconds)."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)
