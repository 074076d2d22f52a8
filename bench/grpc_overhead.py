"""Benchmark: an authenticated, metered RPC through the full kit vs a bare grpc.aio echo server.

Same client, same run, same machine. Each server runs in its own process (one core each for
server and client on a 2-core box); the client drives `CONCURRENCY` concurrent unary calls for
`SECONDS`, after a warm-up, and records every latency. The kit server carries everything a real
service has on the hot path: request id, metrics, JWT auth (bearer token on every call), policy,
error mapping and the JSON access log (written to a file). Embedded Postgres and Redis are
started for the kit server's start-up and health checks.

The ratio is against the bare server as generated code registers it (each method a grpc
"registered method"). The kit serves every method through one generic handler instead (see
meshkit.interceptor.Registrar), which by itself makes each RPC cheaper; so the run also measures a
bare server registered that way and prints the kit's ratio against it, to show the cost of the
kit's own work.

Last line: `grpc_overhead: ratio=<x> kit_qps=<n> bare_qps=<n> p99_ms=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import grpc
from _support import grpc_ready, log_to_file, pct_ms, wait_until

from meshdev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from meshdev.testing.servers import TestTokens
from meshkit.auth import Policy, allow, ensure_dev_keys
from meshkit.migrations import MigrationSource
from meshkit.server import App, Kit, ServiceDefinition, ServiceRegistration
from meshkit.settings import KitSettings
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

CONCURRENCY = 32
SECONDS = 5.0
WARMUP = 1.5
ROUNDS = 4
KINDS = ("bare", "bare-generic", "kit")


class EchoServicer(notify_pb2_grpc.NotifyServiceServicer):
    async def RenderTemplate(
        self, request: notify_pb2.RenderTemplateRequest, context: Any
    ) -> notify_pb2.RenderTemplateResponse:
        return notify_pb2.RenderTemplateResponse(subject=request.template_id)


class BenchSettings(KitSettings):
    service_name: ClassVar[str] = "bench"


POLICY: Policy = {
    m.name: allow("admin") for m in notify_pb2.DESCRIPTOR.services_by_name["NotifyService"].methods
}


async def _build(kit: Kit) -> Sequence[ServiceRegistration]:
    return [
        ServiceRegistration(
            descriptor=notify_pb2.DESCRIPTOR.services_by_name["NotifyService"],
            add_to_server=notify_pb2_grpc.add_NotifyServiceServicer_to_server,
            servicer=EchoServicer(),  # type: ignore[abstract]
            policy=POLICY,
        )
    ]


class _GenericOnly:
    """Registers a generated servicer through its generic handler only."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        pass


async def serve(kind: str, port: int, log_file: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if kind in ("bare", "bare-generic"):
        server = grpc.aio.server()
        target: Any = server if kind == "bare" else _GenericOnly(server)
        notify_pb2_grpc.add_NotifyServiceServicer_to_server(EchoServicer(), target)  # type: ignore[abstract]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await stop.wait()
        await server.stop(1)
        return
    log_to_file("bench", log_file)
    migrations = Path(tempfile.mkdtemp())
    (migrations / "0001_none.sql").write_text("SELECT 1;\n")
    definition = ServiceDefinition(BenchSettings, MigrationSource("bench", migrations), _build)
    settings = BenchSettings(
        grpc_port=port, ops_port=0, app_env="test"
    )  # DATABASE_URL, REDIS_URL, DEV_DIR from the environment
    app = App(definition, settings)
    await app.start()
    await stop.wait()
    await app.stop()


async def drive(port: int, metadata: tuple[tuple[str, str], ...]) -> tuple[float, list[float]]:
    """Run the load; returns (qps, latencies in seconds) for the measured window."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        request = notify_pb2.RenderTemplateRequest(template_id="bench", variables={"a": "b"})
        latencies: list[float] = []
        measuring = False
        done = False

        async def worker() -> None:
            while not done:
                t0 = time.perf_counter()
                await stub.RenderTemplate(request, metadata=metadata, timeout=10)
                if measuring:
                    latencies.append(time.perf_counter() - t0)

        tasks = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
        await asyncio.sleep(WARMUP)
        measuring = True
        started = time.perf_counter()
        await asyncio.sleep(SECONDS)
        measuring = False
        elapsed = time.perf_counter() - started
        done = True
        await asyncio.gather(*tasks)
        return len(latencies) / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=["kit", "bare", "bare-generic"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--log-file", type=Path)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.log_file))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    postgres = EmbeddedPostgres(work / "pg")
    redis = EmbeddedRedis(work / "redis")
    env = {
        **os.environ,
        "DATABASE_URL": postgres.start(),
        "REDIS_URL": redis.start(),
        "DEV_DIR": str(work / "dev"),
    }
    ensure_dev_keys(work / "dev")
    token = TestTokens(work / "dev").user("bench", ["admin"], aud="tickettoken.bench", ttl=3600)
    kit_md = (("authorization", f"Bearer {token}"), ("x-request-id", "bench-request"))
    results: dict[str, list[tuple[float, list[float]]]] = {
        "kit": [],
        "bare": [],
        "bare-generic": [],
    }
    # One core for the server, the other for the client, the same for both servers: the
    # comparison is then not at the mercy of the scheduler moving the two around.
    pinned = len(os.sched_getaffinity(0)) >= 2
    if pinned:
        os.sched_setaffinity(0, {0})
    try:
        for _ in range(ROUNDS):
            for kind in KINDS:
                port = free_port()
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve",
                        kind,
                        "--port",
                        str(port),
                        "--log-file",
                        str(work / "access.log"),
                    ],
                    env=env,
                    preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if pinned else None,
                )
                try:
                    wait_until(partial(grpc_ready, port), f"{kind} server")
                    md = kit_md if kind == "kit" else ()
                    qps, lat = asyncio.run(drive(port, md))
                    results[kind].append((qps, lat))
                    print(
                        f"{kind:>12}: qps={qps:8.0f} p50_ms={pct_ms(lat, 0.5):6.2f} "
                        f"p99_ms={pct_ms(lat, 0.99):6.2f}",
                        flush=True,
                    )
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
    finally:
        redis.stop()
        postgres.stop()
    kit_qps = statistics.median(q for q, _ in results["kit"])
    bare_qps = statistics.median(q for q, _ in results["bare"])
    # Each kit round is compared with the bare round just before it (same machine state);
    # the median of those ratios is robust to a round disturbed by other work.
    ratio = statistics.median(
        k / b for (k, _), (b, _) in zip(results["kit"], results["bare"], strict=True)
    )
    generic_ratio = statistics.median(
        k / b for (k, _), (b, _) in zip(results["kit"], results["bare-generic"], strict=True)
    )
    kit_lat = [v for _, lat in results["kit"] for v in lat]
    bare_lat = [v for _, lat in results["bare"] for v in lat]
    print(
        f"bare p50_ms={pct_ms(bare_lat, 0.5):.2f} p99_ms={pct_ms(bare_lat, 0.99):.2f}; "
        f"kit p50_ms={pct_ms(kit_lat, 0.5):.2f} p99_ms={pct_ms(kit_lat, 0.99):.2f}; "
        f"concurrency={CONCURRENCY} seconds={SECONDS} rounds={ROUNDS} pinned={pinned}"
    )
    print(
        f"kit vs a bare server with one generic handler (the kit's dispatch): "
        f"ratio={generic_ratio:.3f} bare_generic_qps="
        f"{statistics.median(q for q, _ in results['bare-generic']):.0f}"
    )
    print(
        f"grpc_overhead: ratio={ratio:.3f} kit_qps={kit_qps:.0f} "
        f"bare_qps={bare_qps:.0f} p99_ms={pct_ms(kit_lat, 0.99):.2f}"
    )


if __name__ == "__main__":
    main()
