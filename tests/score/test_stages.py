"""The score stages chained as run.py chains them, on records whose images sit in a fetch folder."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import dedup, fetch, records
from curate.score import aesthetic, embed, images, nsfw, store, watermark
from curate.score.filter import EmbeddingHeads, ScoreThresholds, ScoringConfig

from .conftest import jpeg


def fetch_folder(root, source, images_by_key):
    """An img2dataset parquet shard with our key column, as fetch.download leaves it."""
    folder = root / source / fetch.IMAGES
    folder.mkdir(parents=True)
    pq.write_table(pa.table({fetch.KEY_COLUMN: list(images_by_key), fetch.ENCODE_COLUMN: list(images_by_key.values())},
                            schema=pa.schema([(fetch.KEY_COLUMN, pa.string()), (fetch.ENCODE_COLUMN, pa.binary())])),
                   folder / "00000.parquet")
    (folder / "00000_stats.json").write_text("{}")


def test_attach_embed_score_store_filter_on_three_records(tmp_path, clip768):
    rows = [records.candidate("met", str(i), license="CC0-1.0", original_width=96, original_height=80,
                              image_file="met/images/00000.parquet", image_row=i) for i in range(3)]
    rows.append(records.finish(records.candidate("met", "no-image"), records.FAILED, "download_timeout"))
    keys = [r["key"] for r in rows]
    fetch_folder(tmp_path / "fetch", "met", {k: jpeg(i) for i, k in enumerate(keys[:3])})
    heads_dir = tmp_path / "heads"
    heads_dir.mkdir()
    aesthetic.save_random(heads_dir / "aesthetic.pth", "improved_mlp", 768)
    watermark.save_random(heads_dir / "watermark.pt")
    nsfw.save_random(heads_dir / "nsfw.pt", 768)
    scoring = ScoringConfig.model_validate({
        "clip": clip768.model_dump(), "batch_size": 2,
        "aesthetic": {"weights": str(heads_dir / "aesthetic.pth"), "min_score": -1e9},
        "watermark": {"weights": str(heads_dir / "watermark.pt"), "max_pwatermark": 1.0},
        "nsfw": {"kind": "head", "weights": str(heads_dir / "nsfw.pt"), "max_pnsfw": 1.0}})

    batch = images.AttachImages(tmp_path / "fetch")(records.to_table(rows))
    assert batch[images.IMAGE].to_pylist() == [jpeg(0), jpeg(1), jpeg(2), None]
    batch = embed.Embed(scoring.clip, scoring.batch_size)(batch)
    batch = watermark.Watermark(scoring.watermark)(batch)
    batch = images.drop_images(dedup.add_phash(batch))
    batch = EmbeddingHeads(scoring)(batch)
    batch = store.EmbeddingWriter(tmp_path / "embeddings")(batch)
    out = ScoreThresholds(scoring)(batch).to_pylist()

    assert [r["status"] for r in out] == ["pending"] * 3 + ["failed"]
    for column in (aesthetic.SCORE, watermark.SCORE, nsfw.SCORE, dedup.PHASH, store.FILE, store.ROW):
        assert [r[column] is None for r in out] == [False, False, False, True], column
    assert all(0 <= r[watermark.SCORE] <= 1 and 0 <= r[nsfw.SCORE] <= 1 for r in out[:3])
    stored = store.load(tmp_path / "embeddings", keys[:3])
    assert np.allclose(np.linalg.norm(stored.vectors.astype(np.float32), axis=1), 1, atol=2e-3)
    for r, vector in zip(out, stored.vectors):
        assert np.array_equal(np.load(tmp_path / "embeddings" / r[store.FILE])[r[store.ROW]], vector)


def test_attach_images_fails_for_a_pending_record_the_fetcher_has_no_image_for(tmp_path):
    rows = [records.candidate("met", "x")]
    fetch_folder(tmp_path, "met", {records.make_key("met", "other"): jpeg(0)})
    with pytest.raises(KeyError, match="no stored image"):
        images.AttachImages(tmp_path)(records.to_table(rows))
    located = [{**rows[0], "image_file": "met/images/00000.parquet", "image_row": 0}]
    with pytest.raises(KeyError, match="not met-"):  # the row there holds another record's image
        images.AttachImages(tmp_path)(records.to_table(located))
