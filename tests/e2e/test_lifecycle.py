"""Process lifecycle: graceful drain on SIGTERM, and start-up refusal of bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshdev.embedded import free_port
from meshdev.testing.servers import TestTokens
from meshkit.auth import ensure_dev_keys
from tests.e2e.conftest import REPO
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

pytestmark = pytest.mark.e2e


def _clean_env() -> dict[str, str]:
    drop = {"DATABASE_URL", "REDIS_URL", "APP_ENV", "JWT_PUBLIC_KEYS", "MESH_EMBEDDED"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_sigterm_drains_in_flight_rpc(
    postgres_url: str, redis_url: str, dev_dir: Path, tokens: TestTokens
) -> None:
    grpc_port, ops_port = free_port(), free_port()
    env = {
        **_clean_env(),
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": f"drain_{uuid.uuid4().hex[:8]}",
        "GRPC_PORT": str(grpc_port),
        "OPS_PORT": str(ops_port),
        "DEV_DIR": str(dev_dir),
        "SHUTDOWN_DELAY_S": "1.0",
        "SHUTDOWN_GRACE_S": "6",
        "HEALTH_CHECK_INTERVAL_S": "0.2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.apps.kitapp"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "kit app never became SERVING"
            time.sleep(0.1)

        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        md = tokens.metadata(tokens.user("admin-1", ["admin"], aud="tickettoken.kitapp"))
        result: dict[str, Any] = {}

        def slow_call() -> None:
            try:
                result["reply"] = stub.RenderTemplate(
                    notify_pb2.RenderTemplateRequest(
                        template_id="slow", variables={"delay": "2.5", "name": "x"}
                    ),
                    metadata=md,
                    timeout=20,
                )
            except grpc.RpcError as exc:
                result["error"] = exc

        thread = threading.Thread(target=slow_call)
        thread.start()
        time.sleep(0.5)  # the slow RPC is in flight
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        saw_not_serving = False
        while time.monotonic() - signalled < 0.9:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status
            except grpc.RpcError:
                break
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                saw_not_serving = True
                break
            time.sleep(0.05)
        assert saw_not_serving, "health did not turn NOT_SERVING first"
        thread.join(timeout=20)
        assert "error" not in result, result.get("error")
        assert result["reply"].subject == "hello x"
        code = proc.wait(timeout=15)
        assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() - signalled < 1.0 + 6 + 2
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_settings_named_in_one_message() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "payment_service"],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if "DATABASE_URL" in line]
    assert len(lines) == 1 and "REDIS_URL" in lines[0] and "missing" in lines[0]


def test_production_refuses_dev_defaults(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    env = {
        **_clean_env(),
        "APP_ENV": "production",
        "DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "JWT_PUBLIC_KEYS": f"{keys.kid}={keys.public_key_path}",
        "MESH_EMBEDDED": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "nft_service"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "APP_ENV=production refuses" in out.stderr
    for problem in ("dev key", "dev issuer", "JWT_SIGNING_KEY_FILE", "MESH_EMBEDDED"):
        assert problem in out.stderr, problem
