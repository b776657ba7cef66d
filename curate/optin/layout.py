"""What opt-in code reads and writes in a run folder, and the reason code of a revoked record.

Kept apart from ``revoke`` so that the catalog (which ``revoke`` rebuilds) can read the
run's revocation log without importing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The reason code of a revoked record; records.REASONS[REJECTED] lists it.
REVOKED = "revoked"
RECORDS = Path("records") / "records.parquet"
DONE = "DONE"
RUN_LOG = "revocations.jsonl"  # one entry per application of revocations to the run


def run_log(out: Path) -> list[dict[str, Any]]:
    """The revocations applied to a run, oldest first."""
    path = Path(out) / RUN_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
