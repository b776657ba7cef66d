"""Helpers for adapter tests: JSON-lines inputs written in the test, rows grouped by outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """``write_jsonl(line, ...)``: objects are dumped as JSON, strings written as given (for bad lines)."""

    def write(*lines: Any, name: str = "records.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                        encoding="utf-8")
        return path

    return write
