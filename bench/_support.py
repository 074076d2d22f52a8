"""Helpers every benchmark script shares: percentiles, waiting for a server, file logging.

Benchmarks run standalone (`.venv/bin/python bench/<name>.py`); the script's folder is on
`sys.path`, so `from _support import ...` works without installing anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit.logs import configure_logging


def pct_ms(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of latencies in seconds, in milliseconds (0 when empty)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `check` until it is true; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - not up yet; keep polling until the deadline
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s")


def grpc_ready(port: int) -> bool:
    """The server on `port` accepts a gRPC connection."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.5)
        except grpc.FutureTimeoutError:
            return False
    return True


def grpc_serving(port: int) -> bool:
    """The server on `port` answers its health check with SERVING."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_answers(url: str, method: str = "GET") -> bool:
    """Anything at all answers HTTP at `url` (any status): the server is listening."""
    import httpx

    httpx.request(method, url, timeout=1)
    return True


def log_to_file(service: str, path: Path) -> None:
    """JSON logs (access lines included, as in production) into a file, not the terminal."""
    configure_logging(service, stream=path.open("a"))
