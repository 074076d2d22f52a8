"""`make image`: build the production image and the dev image with docker or podman.

Usage::

    python scripts/build_image.py [--tag dev] [--engine docker|podman]

Builds `tickettoken-mesh:<tag>` (deploy/Dockerfile's default target, production) and
`tickettoken-mesh-dev:<tag>` (target `dev`: the same plus localstripe, for the kind overlay)
from the repository root. The engine is the first of docker and podman that is installed and
answers (`<engine> info`); when none does, it says which it found and why each failed, and exits
with status 3 without building anything.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("docker", "podman")


def find_engine(preferred: str | None = None) -> tuple[str | None, list[str]]:
    """(the first working engine or None, why each candidate was not usable)."""
    reasons: list[str] = []
    for name in [preferred] if preferred else ENGINES:
        path = shutil.which(name)
        if path is None:
            reasons.append(f"{name}: not installed")
            continue
        try:
            info = subprocess.run(
                [path, "info"], capture_output=True, text=True, timeout=30, check=False
            )
        except subprocess.TimeoutExpired:
            reasons.append(f"{name}: `{name} info` did not answer in 30 s")
            continue
        if info.returncode == 0:
            return path, reasons
        lines = (info.stderr or info.stdout).strip().splitlines()
        detail = lines[-1] if lines else "no output"
        reasons.append(f"{name}: installed, but its engine does not answer ({detail})")
    return None, reasons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="dev")
    parser.add_argument("--engine", choices=ENGINES)
    args = parser.parse_args()
    engine, reasons = find_engine(args.engine)
    if engine is None:
        sys.stderr.write(
            "make image: no working container engine, nothing was built.\n"
            + "".join(f"  - {reason}\n" for reason in reasons)
            + "Install and start Docker or Podman, then run `make image` again.\n"
        )
        sys.exit(3)
    dockerfile = str(REPO / "deploy" / "Dockerfile")
    for target, image in (("production", "tickettoken-mesh"), ("dev", "tickettoken-mesh-dev")):
        command = [
            engine,
            "build",
            "-f",
            dockerfile,
            "--target",
            target,
            "-t",
            f"{image}:{args.tag}",
            ".",
        ]
        sys.stderr.write("+ " + " ".join(command) + "\n")
        subprocess.run(command, cwd=REPO, check=True)


if __name__ == "__main__":
    main()
