"""Log capture for tests: the JSON lines the services write, as dicts."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from meshkit.logs import ContextFilter, JsonFormatter

__all__ = ["log_lines"]


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Every JSON log line written while the test runs, access-log lines included (the access
    log writes to the first stream handler of the root logger: this one)."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter("test"))
    root = logging.getLogger()
    level = root.level
    root.handlers.insert(0, handler)
    root.setLevel(logging.INFO)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]

    yield lines
    root.removeHandler(handler)
    root.setLevel(level)
