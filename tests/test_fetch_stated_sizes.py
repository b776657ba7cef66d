"""The sizes adapters hand to the pre-fetch resolution check: only what the source's metadata states of the
image the record's URL serves (or its original), on the recorded fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from curate.score.resolution import Resolution, before_fetch, stated_size
from curate.sources import aic, cleveland

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def sizes(rows: list[dict]) -> dict[str, tuple[int, int] | None]:
    return {row["source_id"]: stated_size(row["meta"]) for row in rows}


def test_aic_states_the_primary_images_size_from_its_thumbnail_but_not_the_alternates():
    artworks = FIXTURES / "art-institute-of-chicago" / "artworks"
    got = sizes(list(aic.read(artworks, "aic", {"alt_images": True})))
    thumbnail = json.loads((artworks / "19.json").read_text(encoding="utf-8"))["thumbnail"]
    assert got["19"] == (thumbnail["width"], thumbnail["height"])
    alternates = [key for key in got if "/" in key]
    assert alternates and all(got[key] is None for key in alternates)


def test_cleveland_states_the_size_of_the_rendition_it_fetches():
    path = FIXTURES / "cleveland-museum-of-art" / "artworks.jsonl"
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    for rendition in ("web", "print"):
        row = next(r for r in cleveland.read(path, "cleveland", {"rendition": rendition})
                   if r["source_id"] == str(first["id"]))
        stated = first["images"][rendition]
        assert row["url"] == stated["url"]
        assert stated_size(row["meta"]) == (int(stated["width"]), int(stated["height"]))


def test_unstated_or_unusable_sizes_leave_the_record_to_be_fetched():
    metas = [None, "{}", json.dumps({"source_width": 10}), json.dumps({"source_width": "10", "source_height": 9}),
             json.dumps({"source_width": 0, "source_height": 10}), json.dumps({"source_width": True,
                                                                               "source_height": 10})]
    candidates = {"key": [f"k{i}" for i in range(len(metas))], "url": ["u"] * len(metas), "meta": metas}
    left, decided = before_fetch(pa.table(candidates), [Resolution({"min_side": 64})])
    assert left["key"].to_pylist() == candidates["key"] and decided.num_rows == 0


def test_without_a_resolution_filter_nothing_is_judged_before_the_fetch():
    candidates = pa.table({"key": ["k"], "url": ["u"], "meta": [json.dumps({"source_width": 5, "source_height": 5})]})
    left, decided = before_fetch(candidates, [])
    assert left.equals(candidates) and decided.num_rows == 0
