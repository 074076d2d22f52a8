"""The dev key-encryption key file: processes starting at once on a fresh dev directory all end up
with the same whole key (one creates it; nobody fails or reads it half-written)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import asyncio, sys, time
from pathlib import Path
from integration_service.adapters.keys import LocalKeys
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every process past its imports: go
keys = LocalKeys.dev(Path(sys.argv[1]))
wrapped = asyncio.run(keys.wrap(keys.active_version, b"k" * 32, {"c": "1"}))
unwrapped = asyncio.run(keys.unwrap(keys.active_version, wrapped, {"c": "1"}))
assert unwrapped == b"k" * 32
print(Path(sys.argv[1]).read_text().strip())
"""


def test_processes_racing_to_create_the_dev_key_share_one(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "kek"
    go = time.time() + 5.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    keys = {out.strip() for out, _ in results}
    assert keys == {path.read_text().strip()}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["kek"]  # no temporary file left behind
