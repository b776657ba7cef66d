"""Where a harvest stands, in ``OUT/cursor.json``, so that a killed pull continues without duplicates.

A harvest is a sequence of steps (a page of a listing, a batch of objects). A step's outputs are
written in this order: its raw pages and whole files (atomically, under names that do not depend
on what came before), then its lines appended to the output files, then the cursor. The cursor
holds each appended file's length after the last finished step, so a pull killed between the
append and the cursor is repaired on the next start by cutting those files back to that length,
and the step is done again. A step cut short by ``--limit`` is remembered by how many of its
records were taken (``skip``), and a later pull with a higher limit takes the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curate.io import write_text_atomic

CURSOR = "cursor.json"


class Identity(BaseModel):
    """What a harvest asked for: a pull into an existing folder must ask for the same."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    harvester: str
    base_url: str
    query: str | None
    params: dict[str, str | list[str]]
    dump: str | None = None  # the dump read instead of the API (--from-dump): a file's path or a URL


class Cursor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: Identity
    state: dict[str, Any] | None = None  # the harvester's own: where its next step starts (None: the start)
    skip: int = 0  # records of that next step already taken (a step cut by --limit)
    records: int = 0
    pages: int = 0  # raw pages kept, so the next one's number
    failures: int = 0
    offsets: dict[str, int] = Field(default_factory=dict)  # appended file -> its length after the last step
    done: bool = False

    @classmethod
    def open(cls, out: Path, identity: Identity, appended: tuple[str, ...]) -> "Cursor":
        """The folder's cursor, or a new one, with the ``appended`` files cut back to it; a folder holding
        another harvest, or such files without a cursor from a harvest, is an error."""
        path = out / CURSOR
        if not path.exists():
            found = [name for name in appended if (out / name).exists()]
            if found:
                raise ValueError(f"{out} holds {', '.join(found)} but no {CURSOR}: not a harvest this command "
                                 f"can continue; pull into a new folder")
            return cls(identity=identity)
        try:
            cursor = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not a harvest cursor ({e}); move the folder away to start afresh") from None
        differing = [f"{name}: {getattr(cursor.identity, name)!r} there, {getattr(identity, name)!r} now"
                     for name in Identity.model_fields if getattr(cursor.identity, name) != getattr(identity, name)]
        if differing:
            raise ValueError(f"{out} holds another harvest ({'; '.join(differing)}); pull into a new folder")
        cursor._cut_back(out, appended)
        return cursor

    def _cut_back(self, out: Path, appended: tuple[str, ...]) -> None:
        for name in appended:
            path, length = out / name, self.offsets.get(name, 0)  # a file first appended by the lost step: 0
            if path.exists() and path.stat().st_size > length:
                os.truncate(path, length)

    def save(self, out: Path) -> None:
        write_text_atomic(json.dumps(self.model_dump(mode="json"), indent=1) + "\n", out / CURSOR)
