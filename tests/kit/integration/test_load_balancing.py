"""A replica added behind a name gets calls from a client that was already connected.

This is the autoscaling case in Kubernetes: a headless Service's DNS name resolves to the ready
pods; the HPA adds a pod; clients connected before it know only the old addresses. The test
builds the same situation on one machine:

* a small DNS server on 127.0.0.1 (below) answers `kitapp.mesh.test` with the addresses the
  test sets, as the cluster DNS answers a headless Service's name with its pods' IPs;
* replica A is an in-process kit server on 127.0.0.2:P, replica B one on 127.0.0.3:P (the
  whole 127.0.0.0/8 is loopback on Linux, so two servers share a port as two pods do);
* the client is the kit's own `MeshClients` channel with target
  `dns://127.0.0.1:<dns port>/kitapp.mesh.test:P` (gRPC's c-ares resolver asks that server).

It proves the two halves of the design: with the servers' maximum connection age, the client
re-resolves the name when A closes its aged connection (GOAWAY) and round_robin sends calls to
B; without it, every call keeps going to A, however many are made (the control case).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest_asyncio

from meshdev.testing.servers import TestTokens, running_app
from meshkit.clients import MeshClients
from meshkit.server import App
from tests.kit.apps.kitapp import DEFINITION, KitAppServicer
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

NAME = "kitapp.mesh.test"
REPLICA_A, REPLICA_B = "127.0.0.2", "127.0.0.3"
MAX_CALLS = 400


class _DnsServer(asyncio.DatagramProtocol):
    """Answers A queries for NAME with `addresses` (TTL 0); anything else: no records."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        ident, _flags, qdcount = struct.unpack("!HHH", data[:6])
        labels, i = [], 12
        while data[i]:
            labels.append(data[i + 1 : i + 1 + data[i]].decode())
            i += 1 + data[i]
        question = data[12 : i + 5]
        qtype = struct.unpack("!H", data[i + 1 : i + 3])[0]
        answers = b""
        count = 0
        if ".".join(labels).lower() == NAME and qtype == 1:
            self.queries += 1
            for address in self.addresses:
                answers += struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(address)
                count += 1
        header = struct.pack("!HHHHHH", ident, 0x8180, min(qdcount, 1), count, 0, 0)
        assert self.transport is not None
        self.transport.sendto(header + question + answers, addr)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    with socket.socket() as sock:  # the same port must be free on the other address too
        sock.bind((REPLICA_B if host == REPLICA_A else REPLICA_A, port))
    return port


def _renders(app: App) -> int:
    servicer = app.registrations[0].servicer
    assert isinstance(servicer, KitAppServicer)
    return servicer.render_runs


@pytest_asyncio.fixture(loop_scope="session")
async def dns() -> AsyncIterator[tuple[_DnsServer, int]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(_DnsServer, local_addr=("127.0.0.1", 0))
    try:
        yield server, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def _scale_out(
    dns: tuple[_DnsServer, int],
    tokens: TestTokens,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    *,
    max_age_s: float,
) -> tuple[int, int]:
    """Start A, connect, start B and publish it in DNS, call until B answers or MAX_CALLS; the
    calls each replica served after B was published."""
    server, dns_port = dns
    port = _free_port(REPLICA_A)
    settings: dict[str, Any] = {
        "postgres_url": postgres_url,
        "redis_url": redis_url,
        "dev_dir": dev_dir,
        "grpc_port": port,
        "grpc_max_connection_age_s": max_age_s,
        "grpc_max_connection_age_grace_s": 1.0,
    }
    md = tokens.metadata(tokens.user("ops-1", ["admin"], aud="tickettoken.kitapp"))
    request = notify_pb2.RenderTemplateRequest(template_id="t", variables={"name": "x"})
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            running_app(DEFINITION, grpc_host=REPLICA_A, **settings)
        )
        server.addresses = [REPLICA_A]
        clients = MeshClients(
            targets={"kitapp": f"dns://127.0.0.1:{dns_port}/{NAME}:{port}"},
            token_for=None,
            options=[("grpc.dns_min_time_between_resolutions_ms", 100)],
        )
        stack.push_async_callback(clients.close)
        stub = clients.stub("kitapp", notify_pb2_grpc.NotifyServiceStub)
        for _ in range(5):
            await stub.RenderTemplate(request, metadata=md, timeout=5)
        assert _renders(a) == 5  # connected, to A only
        assert server.queries >= 1  # through our DNS server
        resolved_before = server.queries

        b = await stack.enter_async_context(
            running_app(DEFINITION, grpc_host=REPLICA_B, **settings)
        )
        server.addresses = [REPLICA_A, REPLICA_B]  # the new pod is ready: DNS lists it
        before_a = _renders(a)
        for _ in range(MAX_CALLS):
            await stub.RenderTemplate(request, metadata=md, timeout=5)
            if _renders(b) >= 10:
                break
            await asyncio.sleep(0.01)
        if max_age_s > 0:
            assert server.queries > resolved_before, "the GOAWAY made the channel re-resolve"
        return _renders(a) - before_a, _renders(b)


async def test_new_replica_gets_calls_once_connections_age_out(
    dns: tuple[_DnsServer, int],
    tokens: TestTokens,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
) -> None:
    to_a, to_b = await _scale_out(dns, tokens, postgres_url, redis_url, dev_dir, max_age_s=0.5)
    assert to_b >= 10, f"B got {to_b} of {to_a + to_b} calls"
    assert to_a > 0  # A kept serving: round_robin spreads, it does not move everything


async def test_without_a_connection_age_the_new_replica_gets_nothing(
    dns: tuple[_DnsServer, int],
    tokens: TestTokens,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
) -> None:
    to_a, to_b = await _scale_out(dns, tokens, postgres_url, redis_url, dev_dir, max_age_s=0)
    assert (to_a, to_b) == (MAX_CALLS, 0)
