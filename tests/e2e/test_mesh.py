"""The whole mesh started the way `make run` does, checked with the real grpcurl binary.

`python -m meshdev.launcher run` starts its own embedded Postgres and Redis, the dev key pair and
the four service processes; grpcurl lists every service through reflection and health-checks
each; `/metrics` of a real service shows the right codes (UNIMPLEMENTED is covered in-process
by tests/kit/integration/test_kit_grpc.py); SIGINT (Ctrl-C) stops everything with no orphan process
and every port freed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import REPO, pid_alive, port_is_free

pytestmark = pytest.mark.e2e

SERVICES = {
    "payment": "tickettoken.payment.v1.PaymentService",
    "nft": "tickettoken.nft.v1.NftService",
    "notify": "tickettoken.notify.v1.NotifyService",
    "integration": "tickettoken.integration.v1.IntegrationService",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("mesh")
    state_file = work / "state.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshdev.launcher",
            "run",
            "--free-ports",
            "--dev-dir",
            str(work / "dev"),
            "--state-file",
            str(state_file),
            "--grace",
            "5",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(work / "mesh.log", "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 120
    while not state_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("mesh did not start:\n" + (work / "mesh.log").read_text()[-4000:])
        time.sleep(0.2)
    state = json.loads(state_file.read_text())
    state["dev_dir"] = work / "dev"
    state["proc"] = proc
    yield state
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def grpcurl_run(grpcurl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )


def token(dev_dir: Path, role: str, aud: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshdev.tokens",
            "--dev-dir",
            str(dev_dir),
            "--role",
            role,
            "--aud",
            aud,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_grpcurl_lists_and_health_checks_every_service(mesh: dict[str, Any], grpcurl: str) -> None:
    for name, full in SERVICES.items():
        port = mesh["services"][name]["grpc"]
        listed = grpcurl_run(grpcurl, f"127.0.0.1:{port}", "list")
        assert listed.returncode == 0, listed.stderr
        names = listed.stdout.split()
        assert full in names and "grpc.health.v1.Health" in names
        for service in ("", full):
            checked = grpcurl_run(
                grpcurl,
                "-d",
                json.dumps({"service": service}),
                f"127.0.0.1:{port}",
                "grpc.health.v1.Health/Check",
            )
            assert checked.returncode == 0, checked.stderr
            assert json.loads(checked.stdout)["status"] == "SERVING"
        described = grpcurl_run(grpcurl, f"127.0.0.1:{port}", "describe", full)
        assert described.returncode == 0 and "rpc " in described.stdout


def test_metrics_show_real_codes(mesh: dict[str, Any], grpcurl: str) -> None:
    port = mesh["services"]["payment"]["grpc"]
    ops = mesh["services"]["payment"]["ops"]
    method = "tickettoken.payment.v1.PaymentService/ReconcilePayments"
    target = f"127.0.0.1:{port}"
    no_token = grpcurl_run(grpcurl, "-d", "{}", target, method)
    assert "Unauthenticated" in no_token.stderr
    buyer = token(mesh["dev_dir"], "buyer", "tickettoken.payment")
    denied = grpcurl_run(
        grpcurl, "-H", f"authorization: Bearer {buyer}", "-d", "{}", target, method
    )
    assert "PermissionDenied" in denied.stderr
    admin = token(mesh["dev_dir"], "admin", "tickettoken.payment")
    bad = grpcurl_run(grpcurl, "-H", f"authorization: Bearer {admin}", "-d", "{}", target, method)
    assert "InvalidArgument" in bad.stderr and "idempotency_key" in bad.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "grpc_server_handled_total":
                counts[(sample.labels["grpc_method"], sample.labels["grpc_code"])] = sample.value
    assert counts[("ReconcilePayments", "Unauthenticated")] == 1
    assert counts[("ReconcilePayments", "PermissionDenied")] == 1
    assert counts[("ReconcilePayments", "InvalidArgument")] == 1
    assert counts[("ReconcilePayments", "OK")] == 0
    assert counts[("Check", "OK")] >= 1  # health checks go through the same layer


def test_demo_purchase_through_grpcurl(mesh: dict[str, Any], grpcurl: str) -> None:
    """The banner's CreatePayment example: real Stripe SDK → localstripe, demo venue seeded."""
    port = mesh["services"]["payment"]["grpc"]
    buyer = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshdev.tokens",
            "--dev-dir",
            str(mesh["dev_dir"]),
            "--role",
            "buyer",
            "--sub",
            "buyer-1",
            "--aud",
            "tickettoken.payment",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    body = {
        "idempotency_key": str(uuid.uuid4()),
        "order_id": "order-e2e",
        "venue_id": "venue-demo",
        "event_id": "event-1",
        "buyer_id": "buyer-1",
        "currency": "USD",
        "payment_method_id": "pm_card_visa",
        "line_items": [
            {
                "ticket_type_id": "ga",
                "quantity": 2,
                "unit_price": {"currency": "USD", "amount_minor": "5000"},
            }
        ],
    }
    args = (
        "-H",
        f"authorization: Bearer {buyer}",
        "-d",
        json.dumps(body),
        f"127.0.0.1:{port}",
        "tickettoken.payment.v1.PaymentService/CreatePayment",
    )
    first = grpcurl_run(grpcurl, *args)
    assert first.returncode == 0, first.stderr
    payment = json.loads(first.stdout)["payment"]
    assert payment["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert payment["provider_payment_id"].startswith("pi_"), first.stdout
    again = grpcurl_run(grpcurl, *args)
    assert again.returncode == 0 and json.loads(again.stdout) == json.loads(first.stdout)


def test_ctrl_c_stops_everything(mesh: dict[str, Any]) -> None:
    proc: subprocess.Popen[bytes] = mesh["proc"]
    pids = [info["pid"] for info in mesh["services"].values()]
    ports = [p for info in mesh["services"].values() for p in (info["grpc"], info["ops"])]
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - started < 30
    for pid in pids:
        assert not pid_alive(pid), f"service process {pid} survived"
    for port in ports:
        assert port_is_free(port), f"port {port} still bound"
    out = subprocess.run(["pgrep", "-f", str(mesh["dev_dir"])], capture_output=True, text=True)
    assert out.stdout.strip() == "", f"orphans: {out.stdout}"
