"""The score stages chained as run.py chains them, on records whose images sit in a fetch folder."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import dedup, fetch, records
from curate.score import aesthetic, embed, images, nsfw, store, watermark
from curate.score.filter import EmbeddingHeads, ScoreThresholds, ScoringConfig
from curate.score.together import ScoreImages

from .conftest import jpeg


def fetch_folder(root, source, images_by_key):
    """An img2dataset parquet shard with our key column, as fetch.download leaves it."""
    folder = root / source / fetch.IMAGES
    folder.mkdir(parents=True)
    pq.write_table(pa.table({fetch.KEY_COLUMN: list(images_by_key), fetch.ENCODE_COLUMN: list(images_by_key.values())},
                            schema=pa.schema([(fetch.KEY_COLUMN, pa.string()), (fetch.ENCODE_COLUMN, pa.binary())])),
                   folder / "00000.parquet")
    (folder / "00000_stats.json").write_text("{}")


def scoring_config(heads_dir, clip768):
    heads_dir.mkdir()
    aesthetic.save_random(heads_dir / "aesthetic.pth", "improved_mlp", 768)
    watermark.save_random(heads_dir / "watermark.pt")
    nsfw.save_random(heads_dir / "nsfw.pt", 768)
    return ScoringConfig.model_validate({
        "clip": clip768.model_dump(), "batch_size": 2,
        "aesthetic": {"weights": str(heads_dir / "aesthetic.pth"), "min_score": -1e9},
        "watermark": {"weights": str(heads_dir / "watermark.pt"), "max_pwatermark": 1.0},
        "nsfw": {"kind": "head", "weights": str(heads_dir / "nsfw.pt"), "max_pnsfw": 1.0}})


def test_attach_embed_score_store_filter_on_three_records(tmp_path, clip768):
    rows = [records.candidate("met", str(i), license="CC0-1.0", original_width=96, original_height=80,
                              image_file="met/images/00000.parquet", image_row=i) for i in range(3)]
    rows.append(records.finish(records.candidate("met", "no-image"), records.FAILED, "download_timeout"))
    keys = [r["key"] for r in rows]
    fetch_folder(tmp_path / "fetch", "met", {k: jpeg(i) for i, k in enumerate(keys[:3])})
    scoring = scoring_config(tmp_path / "heads", clip768)

    batch = images.AttachImages(tmp_path / "fetch")(records.to_table(rows))
    assert batch[images.IMAGE].to_pylist() == [jpeg(0), jpeg(1), jpeg(2), None]
    batch = images.drop_images(ScoreImages(scoring)(batch))
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


def test_one_decode_gives_what_each_image_model_gives_on_its_own(tmp_path, clip768, monkeypatch):
    scoring = scoring_config(tmp_path / "heads", clip768)
    rows = [records.candidate("met", str(i)) for i in range(3)]
    table = records.to_table(rows).append_column(images.IMAGE, pa.array([jpeg(0), jpeg(1), b"not a jpeg"]))
    embedded = embed.Embed(scoring.clip, scoring.batch_size)(table)
    alone = dedup.add_phash(watermark.Watermark(scoring.watermark)(embedded))
    decoded = []
    monkeypatch.setattr(images.pixels, "rgb", lambda data, real=images.pixels.rgb: decoded.append(data) or real(data))
    together = ScoreImages(scoring)(table)
    assert len(decoded) == 3  # each image once, not once per model
    for column in (embed.EMBEDDING, watermark.SCORE, dedup.PHASH):
        assert together[column].to_pylist()[2] is None
        if column == dedup.PHASH:
            assert together[column].to_pylist() == alone[column].to_pylist()
        else:
            assert np.allclose(np.array(together[column].to_pylist()[:2], dtype=np.float32),
                               np.array(alone[column].to_pylist()[:2], dtype=np.float32), atol=1e-5), column
    failed = together.to_pylist()[2]
    assert (failed["status"], failed["reason"]) == ("failed", "decode_error")
    assert "watermark detector" in failed["detail"] and "perceptual hash" in failed["detail"]
