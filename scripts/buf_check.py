"""Lint, format-check and breaking-check the protos with the buf CLI from the `buf-bin` wheel.

Usage::

    python scripts/buf_check.py lint                # buf lint (STANDARD) over our protos
    python scripts/buf_check.py format [--write]    # buf format: fail on a diff, or rewrite
    python scripts/buf_check.py breaking [--against REF]
                                                    # no breaking change since REF (FILE rules)

buf cannot compile our protos from source on its own: they import protovalidate's
``buf/validate/validate.proto``, which would come from the Buf Schema Registry (no network here).
So lint and breaking read images built by protoc (`gen_protos.build_image`), which resolves that
import from the descriptor in the installed protovalidate wheel. ``buf format`` only parses, so it
runs on the sources directly.

The breaking check compares the working tree with the protos at REF (default: the commit named in
``protos/BREAKING_BASELINE``, the last released v1 contracts). Move the baseline forward only
when a release of the contracts is cut; a breaking change needs a new package version instead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_protos import PACKAGE, PROTO_ROOT, ROOT, GenerationError, build_image

BASELINE_FILE = PROTO_ROOT / "BREAKING_BASELINE"


def buf() -> str:
    """The buf executable installed by the buf-bin wheel next to this interpreter."""
    path = Path(sys.executable).parent / "buf"
    if not path.is_file():
        raise GenerationError(f"buf not found next to {sys.executable} (pip install buf-bin)")
    return str(path)


def run(*args: str) -> int:
    return subprocess.run([buf(), *args], cwd=ROOT, check=False).returncode


def lint() -> int:
    with tempfile.TemporaryDirectory(prefix="buf_lint_") as tmp:
        image = build_image(Path(tmp) / "image.binpb")
        # --path: lint our files only, not the imported google/ and buf/ schemas in the image.
        return run("lint", str(image), "--path", PACKAGE, "--config", "buf.yaml")


def fmt(write: bool) -> int:
    return run("format", "protos", *(["-w"] if write else ["-d", "--exit-code"]))


def baseline_tree(ref: str, out: Path) -> bool:
    """Export protos/ as of `ref` into out; False when this clone does not have `ref`."""
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, check=False
    )
    if known.returncode != 0:
        return False
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "protos"], cwd=ROOT, capture_output=True, check=True
    )
    out.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return True


def breaking(against: str | None) -> int:
    ref = against or BASELINE_FILE.read_text(encoding="utf-8").split()[0]
    with tempfile.TemporaryDirectory(prefix="buf_breaking_") as tmp:
        base = Path(tmp)
        if not baseline_tree(ref, base / "old"):
            # A shallow clone without the baseline commit cannot compare; say so loudly.
            print(f"buf breaking: SKIPPED, commit {ref} is not in this clone", file=sys.stderr)
            return 0
        old = build_image(base / "old.binpb", base / "old" / "protos")
        new = build_image(base / "new.binpb")
        code = run(
            "breaking", str(new), "--against", str(old), "--path", PACKAGE, "--config", "buf.yaml"
        )
        if code == 0:
            print(f"buf breaking: no breaking change since {ref[:12]}")
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("lint")
    f = sub.add_parser("format")
    f.add_argument("--write", action="store_true", help="rewrite the files instead of diffing")
    b = sub.add_parser("breaking")
    b.add_argument("--against", help="git ref to compare with (default: protos/BREAKING_BASELINE)")
    args = parser.parse_args(argv)
    try:
        if args.command == "lint":
            return lint()
        if args.command == "format":
            return fmt(args.write)
        return breaking(args.against)
    except GenerationError as exc:
        print(f"buf_check: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
