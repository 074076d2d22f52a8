"""Helper process for test_migrations: migrate one schema, print what this process applied.

Usage: python migrate_worker.py <database url> <schema> <test migrations dir>

It prints `ready` once imported and waits for a line on stdin before migrating, so the test can
release all processes at the same moment (imports take longer than the race would).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from meshkit.migrations import KIT_MIGRATIONS, MigrationSource, migrate


async def main(url: str, schema: str, directory: str) -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    applied = await migrate(url, schema, [KIT_MIGRATIONS, MigrationSource("test", Path(directory))])
    sys.stdout.write(json.dumps(applied) + "\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
