"""What a finished run leaves for people: ``CREDITS.md`` with ``credits.parquet`` (``credits``),
``DATASET_CARD.md`` (``dataset_card``) and the page ``report/index.html`` with its thumbnails
(``page``), all computed from the run folder.

``RunFolder.finalize`` writes them after the catalog and stats, at the end of every run and after
every revocation, so they always describe the run as it is; ``cleanroom report OUT`` writes them again.
"""

from __future__ import annotations

from pathlib import Path

from curate.io import atomic_folder, write_text_atomic
from curate.runfolder import RunFolder

FOLDER = "report"


def write(out: str | Path | RunFolder) -> dict[str, Path]:
    """Write every report of the finished run in ``out``; returns their paths by name."""
    from curate.report import credits, dataset_card, page

    folder = out if isinstance(out, RunFolder) else RunFolder.at(out)
    parquet, md = credits.write(folder)
    card = dataset_card.write(folder)
    # Made afresh each time: a thumbnail of a record revoked since must not stay behind.
    with atomic_folder(folder.root / FOLDER) as report_dir:
        write_text_atomic(page.render(folder, report_dir), report_dir / page.INDEX)
    return {"credits": parquet, "credits_md": md, "dataset_card": card,
            "report": folder.root / FOLDER / page.INDEX}
