"""The per-batch stages, called on a few records as plain functions (no Ray)."""


from curate import dedup, records
from curate.caption import CaptionConfig, Captioner
from curate.score.resolution import Resolution, ResolutionFilter


def fetched(source, source_id, width, height, sha="a" * 64, license="CC0-1.0", **fields):
    return records.candidate(source, source_id, url=f"http://127.0.0.1/{source_id}.jpg", license=license,
                             sha256=sha, original_width=width, original_height=height, **fields)


def test_resolution_rejects_small_and_elongated_with_the_numbers():
    rows = [fetched("met", "ok", 400, 300), fetched("met", "small", 100, 80), fetched("met", "wide", 1000, 200)]
    out = Resolution(ResolutionFilter(min_side=128, max_aspect_ratio=3.0))(records.to_table(rows)).to_pylist()
    assert [(r["status"], r["reason"]) for r in out] == [
        ("pending", ""), ("rejected", "min_side"), ("rejected", "max_aspect_ratio")]
    assert "100x80" in out[1]["detail"] and "5.00" in out[2]["detail"]


def test_resolution_leaves_decided_records_alone():
    row = records.finish(fetched("met", "x", 10, 10), records.FAILED, "download_timeout")
    out = Resolution(ResolutionFilter())(records.to_table([row])).to_pylist()
    assert out[0]["reason"] == "download_timeout"


def test_exact_dedup_keeps_best_license_then_size_then_source(tmp_path):
    rows = [
        fetched("commons", "pd", 400, 400, sha="1" * 64, license="public-domain"),
        fetched("met", "cc0", 400, 400, sha="1" * 64, license="CC0-1.0"),
        fetched("met", "small", 200, 200, sha="2" * 64),
        fetched("local", "big", 800, 800, sha="2" * 64),
        fetched("commons", "tie", 300, 300, sha="3" * 64),
        fetched("met", "tie", 300, 300, sha="3" * 64),
        fetched("met", "alone", 300, 300, sha="4" * 64),
    ]
    path = tmp_path / "filtered.parquet"
    import pyarrow.parquet as pq
    pq.write_table(records.to_table(rows), path)
    decisions = dedup.exact_decisions(str(path), {"CC0-1.0": 0, "public-domain": 1},
                                      {"met": 0, "commons": 1, "local": 2})
    survivor = dict(zip(decisions["key"].to_pylist(), decisions["duplicate_of"].to_pylist()))
    key = records.make_key
    assert survivor == {key("commons", "pd"): key("met", "cc0"),
                        key("met", "small"): key("local", "big"),
                        key("commons", "tie"): key("met", "tie")}
    out = dedup.ApplyDuplicates()(dedup.attach_decisions(records.to_table(rows), decisions)).to_pylist()
    assert sum(r["status"] == "duplicate" for r in out) == 3
    assert {r["duplicate_of"] for r in out if r["status"] == "duplicate"} == set(survivor.values())


def test_metadata_captions_skip_missing_parts():
    rows = [fetched("met", "1", 300, 300, title="The Great Wave", creator="Katsushika Hokusai", date="ca. 1831"),
            fetched("met", "2", 300, 300, title="Untitled", creator=None, date=None),
            fetched("met", "3", 300, 300, title=None, creator="Anonymous", date="1700"),
            fetched("met", "4", 300, 300)]
    out = Captioner(CaptionConfig())(records.to_table(rows)).to_pylist()
    assert [r["caption"] for r in out] == ["The Great Wave, by Katsushika Hokusai, ca. 1831", None,
                                           "Anonymous, 1700", None]
    assert [r["caption_origin"] for r in out] == ["metadata", None, "metadata", None]
