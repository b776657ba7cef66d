"""National Gallery of Art: the open-data CSVs, downloaded as published.

``objects.csv`` and ``published_images.csv`` from the program's ``data/`` folder
(github.com/NationalGalleryOfArt/opendata), streamed to disk one after the other, each written
whole or not at all. The nga adapter reads the folder holding both; no ``--query``: the files
are the whole collection. The files themselves are the raw pages (nothing is kept twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from curate.harvest.client import PoliteClient
from curate.harvest.pull import Request, Step

OUTPUT = "."  # the folder: the adapter joins the two CSVs in it
APPENDS = False  # the files are downloaded whole, not appended a record at a time
FILES = ("objects.csv", "published_images.csv")


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    if request.query is not None:
        raise ValueError("nga: the open-data CSVs are the whole collection; a pull takes no --query")
    for number in range((state or {}).get("file", 0), len(FILES)):
        client.download(f"{request.base_url}/{FILES[number]}", out / FILES[number])
        yield Step(state={"file": number + 1} if number + 1 < len(FILES) else None)
