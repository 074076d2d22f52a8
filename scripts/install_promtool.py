"""Install promtool (Prometheus's rule checker and unit-test runner) into the venv.

Usage::

    python scripts/install_promtool.py [--dest .venv/bin]

promtool is taken from Debian's `prometheus` package with the ordinary apt client: the package
is downloaded (`apt-get download`, which needs no root), and only `/usr/bin/promtool` — a
statically linked Go binary — is extracted from it (`dpkg-deb --fsys-tarfile`), so no
Prometheus server is installed, started or enabled. When the package index has never been read
on this machine (a clean CI box), `apt-get update` runs first (as root, as CI does).

Exits non-zero, saying why, when promtool cannot be obtained: the rule tests never skip.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "prometheus"
MEMBER = "./usr/bin/promtool"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _download(workdir: Path) -> Path:
    if shutil.which("apt-get") is None:
        sys.exit(
            "install_promtool: apt-get is not available; install promtool (Debian package "
            "'prometheus') and put it on PATH or in .venv/bin"
        )
    result = _run(["apt-get", "download", PACKAGE], cwd=workdir)
    if result.returncode != 0:
        if os.geteuid() != 0:
            sys.exit(
                f"install_promtool: apt-get download {PACKAGE} failed and the package "
                f"index cannot be refreshed without root:\n{result.stderr}"
            )
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            sys.exit(f"install_promtool: apt-get update failed:\n{update.stderr}")
        result = _run(["apt-get", "download", PACKAGE], cwd=workdir)
        if result.returncode != 0:
            sys.exit(f"install_promtool: apt-get download {PACKAGE} failed:\n{result.stderr}")
    (deb,) = workdir.glob(f"{PACKAGE}_*.deb")
    return deb


def install(dest: Path) -> Path:
    target = dest / "promtool"
    with tempfile.TemporaryDirectory(prefix="promtool-") as tmp:
        workdir = Path(tmp)
        deb = _download(workdir)
        tar_path = workdir / "data.tar"
        with tar_path.open("wb") as out:
            subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=out, check=True)
        with tarfile.open(tar_path) as tar:
            member = tar.getmember(MEMBER)
            source = tar.extractfile(member)
            assert source is not None
            dest.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with partial.open("wb") as f:
                shutil.copyfileobj(source, f)
            partial.chmod(0o755)
            partial.replace(target)
    version = _run([str(target), "--version"])
    if version.returncode != 0:
        sys.exit(f"install_promtool: the extracted promtool does not run:\n{version.stderr}")
    print(f"installed {target}: {version.stdout.splitlines()[0]}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".venv/bin"))
    args = parser.parse_args()
    install(args.dest)


if __name__ == "__main__":
    main()
