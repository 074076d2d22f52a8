"""`make demo` (`python -m meshdev.demo`) against the mesh `make run` starts.

The launcher runs as a process (`python -m meshdev.launcher run --free-ports`, its own embedded
Postgres, Redis, localstripe and SMTP sink, the services as processes; integration is left out:
it takes no part in a purchase) and writes its state file; the demo runs as a process too and
finds the mesh through that file. A whole purchase: exit 0, every step reported, and what it
prints is true (the mint address is the one nft holds, the .eml file is in the mail folder and
is that ticket's confirmation). A mesh without nft: the demo stops with exit 1 naming the
"minted" step, the first that cannot finish.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshdev.standins.smtp import read_message
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e


def launch(work: Path, *extra: str) -> Iterator[dict[str, Any]]:
    dev_dir = work / "dev"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    log = work / "launcher.log"
    command = [sys.executable, "-m", "meshdev.launcher", "run", "--free-ports"]
    command += ["--dev-dir", str(dev_dir), "--grace", "3", "--skip", "integration", *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out)
    state_file = dev_dir / "mesh.json"  # the default the demo reads too
    deadline = time.monotonic() + 120
    try:
        while not state_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mesh did not start:\n" + log.read_text()[-4000:])
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        state["state_file"] = state_file
        yield state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert not state_file.exists()  # removed at stop: no stale file for the next demo


def demo(state: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "DEV_DIR": str(Path(state["state_file"]).parent)}
    return subprocess.run(
        [sys.executable, "-m", "meshdev.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Under the system temp dir, not pytest's (private, and re-locked by any pytest run that
    # starts meanwhile): the embedded PostgreSQL runs as another user when we are root.
    work = Path(tempfile.mkdtemp(prefix="demo-"))
    yield work
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def mesh(scratch: Path) -> Iterator[dict[str, Any]]:
    yield from launch(scratch)


def test_the_demo_buys_mints_and_mails_and_shows_every_step(mesh: dict[str, Any]) -> None:
    result = demo(mesh, "--tickets", "2", "--timeout", "60")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for step in ("payment confirmed", "webhook", "minted", "email delivered"):
        assert re.search(rf"✓ {step}\s+\d+\.\d\ds", out), f"{step} not reported:\n{out}"
    assert re.search(r"demo: ok in \d+\.\d\ds", out)

    tickets = re.findall(r"^ticket (\S+)$", out, re.M)
    mints = re.findall(r"^  mint address: (\w+)$", out, re.M)
    answers = re.findall(r"^  VerifyOwnership: (.*)$", out, re.M)
    emails = re.findall(r"^  email: (.+\.eml)$", out, re.M)
    assert len(tickets) == len(mints) == len(answers) == len(emails) == 2, out
    assert len(set(mints)) == 2
    mail_dir = Path(mesh["mail"]["mail_dir"])
    for ticket, mint, answer, email in zip(tickets, mints, answers, emails, strict=True):
        assert answer.startswith("owned=true status=OWNERSHIP_STATUS_OWNED holder=")
        path = Path(email)
        assert path.parent == mail_dir and path.exists()
        kept = read_message(path)
        assert (kept.subject or "").startswith("Your ticket for")
        assert ticket in (kept.text or "") and mint in (kept.text or "")


def test_the_demo_names_the_step_that_does_not_finish(scratch: Path) -> None:
    # nft never started: the payment goes through, its PaymentSucceeded cannot be delivered.
    for state in launch(scratch, "--skip", "nft"):
        result = demo(state, "--timeout", "4", "--state-file", str(state["state_file"]))
        out = result.stdout
        assert result.returncode == 1, out + result.stderr
        assert "✓ payment confirmed" in out
        assert "stuck at step 'minted': not done within 4s" in out
        assert "email delivered" in out  # named among the steps still waiting
        assert "✓ minted" not in out and "mint address:" not in out


def test_without_a_running_mesh_the_demo_says_how_to_start_one(tmp_path: Path) -> None:
    result = demo({"state_file": tmp_path / "mesh.json"})
    assert result.returncode == 2
    assert "make run" in result.stdout
