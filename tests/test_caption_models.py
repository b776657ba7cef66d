"""CoCa captions and the CLIP similarity filter on tiny random models: plumbing, determinism, thresholds."""

import io
import json
import math

import pyarrow as pa
import pytest
import torch
from PIL import Image

from curate import pixels, records
from curate.caption import CaptionConfig, ClipSimilarity, CocaCaptioner, SimilarityFilter
from curate.captioners.text import finish

TINY_COCA = "open_clip:cleanroom-tiny-coca/random-init"
TINY_CLIP = {"model": "cleanroom-tiny-clip"}
# Short decodes keep the tests fast; the code path is the one real configs take.
BEAMS = {"generation_type": "beam_search", "seq_len": 8, "min_seq_len": 2, "num_beams": 2, "num_beam_groups": 1}
SAMPLING = {"generation_type": "top_k", "top_k": 50, "seq_len": 8, "min_seq_len": 2, "seed": 7}


@pytest.fixture(autouse=True)
def one_thread():
    """Two torch threads on two shared cores spin against each other: 30x slower decoding."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def jpeg(color, size=(80, 60)):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def batch(colors, captions=None, statuses=None):
    rows = [records.candidate("met", f"obj-{i}", title=f"Object {i}") for i in range(len(colors))]
    for row, caption in zip(rows, captions or []):
        row.update(caption=caption, caption_origin="metadata" if caption else None)
    for row, status in zip(rows, statuses or []):
        if status:
            records.finish(row, records.REJECTED, status)
    images = [jpeg(c) if c else None for c in colors]
    return records.to_table(rows).append_column("jpg", pa.array(images, pa.binary()))


def model_captions(table):
    return {r["key"]: [e for e in json.loads(r["captions"] or "[]") if e["origin"] == "model"]
            for r in table.to_pylist()}


def coca(decoding):
    return CocaCaptioner(CaptionConfig(captioner={"model": {"model": "cleanroom-tiny-coca"}, "decoding": decoding,
                                                  "batch_size": 2}))


@pytest.fixture(scope="module")
def coca_stages():
    return coca(BEAMS), coca(SAMPLING)


def test_coca_captions_every_pending_image_and_names_its_model(coca_stages):
    beams, _ = coca_stages
    table = batch(["red", "blue", "green", "white"], statuses=[None, None, None, "watermark"])
    out = beams(table)
    found = model_captions(out)
    keys = out["key"].to_pylist()
    for key in keys[:3]:
        [entry] = found[key]
        assert entry["model"] == TINY_COCA and entry["text"].strip() == entry["text"] and entry["text"]
        assert "<start_of_text>" not in entry["text"] and "<end_of_text>" not in entry["text"]
    assert len({found[key][0]["text"] for key in keys[:3]}) > 1  # each caption comes from its own image
    assert found[keys[3]] == []  # decided records are not captioned
    assert out["caption"].to_pylist() == [None] * 4  # choosing is the caption stage's job


def test_model_text_keeps_only_what_a_reader_sees():
    # Byte-level tokens of a random (or confused) model decode to control characters and U+FFFD.
    assert finish(" a red\x11barn\ufffd on a hill ,", 200) == "a red barn on a hill"
    assert finish("\x02 !! \u200b", 200) is None


def test_coca_is_deterministic_and_rerunning_replaces_its_caption(coca_stages):
    beams, _ = coca_stages
    table = batch(["red", "blue", "green"])
    first = beams(table)
    again = beams(first)
    assert model_captions(first) == model_captions(again)
    assert all(len(entries) == 1 for entries in model_captions(again).values())
    # A restarted actor (a new process, a re-run) with the same model writes the same captions:
    # even random-init weights are drawn from a fixed seed, whatever the global RNG holds.
    torch.manual_seed(12345)
    assert model_captions(coca(BEAMS)(table)) == model_captions(first)


def test_sampled_captions_do_not_depend_on_the_batch_they_came_in(coca_stages):
    _, sampling = coca_stages
    table = batch(["red", "blue", "green"])
    together = model_captions(sampling(table))
    alone = {}
    for i in range(3):
        alone.update(model_captions(sampling(table.slice(i, 1))))
    assert together == alone
    # Different keys draw differently: the seed is per record, not one stream for all.
    assert len({e[0]["text"] for e in together.values()}) > 1


def test_model_stages_refuse_wrong_models_and_missing_images(coca_stages):
    with pytest.raises(ValueError, match="cleanroom-tiny-clip/random-init is a CLIP, which cannot write captions"):
        CocaCaptioner(CaptionConfig(captioner={"model": TINY_CLIP}))
    with pytest.raises(ValueError, match="no captioner"):
        CaptionConfig(choose=["model"])
    beams, _ = coca_stages
    with pytest.raises(ValueError, match=r"record met-\w+ has no image bytes in column 'jpg'"):
        beams(batch(["red", None]))


def test_undecodable_image_fails_the_record_not_the_batch(coca_stages):
    beams, _ = coca_stages
    table = batch(["red", "blue"])
    table = table.set_column(table.schema.get_field_index("jpg"), "jpg",
                             pa.array([table["jpg"][0].as_py(), b"not an image"], pa.binary()))
    out = beams(table).to_pylist()
    assert [r["status"] for r in out] == ["pending", "failed"]
    assert out[1]["reason"] == "decode_error"
    assert out[1]["detail"] == (f"caption: caption model {TINY_COCA}: record {out[1]['key']}: cannot decode its "
                                "stored image (cannot identify image file (12 bytes, starting 6e6f7420616e2069) as "
                                f"{', '.join(pixels.FORMATS)})")


@pytest.fixture(scope="module")
def tiny_clip():
    return ClipSimilarity(SimilarityFilter(model=TINY_CLIP, threshold=0.28))


def with_cosines(stage, monkeypatch, cosines):
    """Make the stage's encoders give each caption a set cosine to every image."""
    monkeypatch.setattr(stage.loaded, "tokenizer", lambda texts: torch.tensor([[cosines[t]] for t in texts]))
    monkeypatch.setattr(stage.loaded.model, "encode_image",
                        lambda images: torch.tensor([[2.0, 0.0]]).repeat(len(images), 1))
    monkeypatch.setattr(stage.loaded.model, "encode_text",
                        lambda tokens: torch.stack([tokens[:, 0], (1 - tokens[:, 0] ** 2).sqrt()], dim=-1) * 3)


def test_similarity_keeps_at_or_above_the_threshold_and_rejects_below_with_the_number(tiny_clip, monkeypatch):
    cosines = {"clear": 0.9, "just above": 0.2801, "just below": 0.2799, "unrelated": -0.1}
    with_cosines(tiny_clip, monkeypatch, cosines)
    table = batch(["red"] * 6, captions=[*cosines, None, "clear"], statuses=[None] * 5 + ["watermark"])
    out = tiny_clip(table).to_pylist()
    assert [r["status"] for r in out] == ["pending", "pending", "rejected", "rejected", "pending", "rejected"]
    assert [r["reason"] for r in out[2:4]] == ["low_clip_similarity"] * 2
    assert out[2]["detail"] == ("clip similarity 0.2799 < 0.28 (open_clip:cleanroom-tiny-clip/random-init) "
                                "for the metadata caption")
    scores = [r["caption_clip_similarity"] for r in out]
    assert [round(s, 4) for s in scores[:4]] == [0.9, 0.2801, 0.2799, -0.1]
    assert scores[4:] == [None, None]  # no caption to score; a decided record is not scored
    assert out[5]["reason"] == "watermark"


def test_similarity_plumbing_on_the_tiny_clip(tiny_clip):
    table = batch(["red", "blue", "red"], captions=["a red square", "a blue square", "a red square"])
    first = tiny_clip(table)
    scores = first["caption_clip_similarity"].to_pylist()
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert math.isclose(scores[0], scores[2], abs_tol=1e-6)  # same image and caption, same score
    assert scores == tiny_clip(table)["caption_clip_similarity"].to_pylist()
    strict = ClipSimilarity(SimilarityFilter(model=TINY_CLIP, threshold=1.0))  # no cosine of these reaches 1
    assert set(strict(table)["status"].to_pylist()) == {"rejected"}


def test_similarity_from_the_scoring_embeddings_matches_encoding_the_images_again(tiny_clip, tmp_path):
    from curate.score import embed, store
    from curate.score.clip import ClipSpec

    table = batch(["red", "blue", "green"], captions=["a red square", "a blue square", None])
    scored = store.EmbeddingWriter(tmp_path)(embed.Embed(ClipSpec(**TINY_CLIP))(table)).drop_columns(["jpg"])
    from_store = ClipSimilarity(SimilarityFilter(model=TINY_CLIP, threshold=0.28), stored=tmp_path)(scored)
    again = tiny_clip(table)["caption_clip_similarity"].to_pylist()
    reused = from_store["caption_clip_similarity"].to_pylist()
    assert reused[2] is None  # no caption: not scored, as without the store
    assert reused[:2] == pytest.approx(again[:2], abs=2e-3)  # the store keeps float16
    unstored = scored.set_column(scored.schema.get_field_index(store.FILE), store.FILE,
                                 pa.array([None] * 3, pa.string()))
    with pytest.raises(ValueError, match=f"{scored['key'][0].as_py()} has no stored embedding"):
        ClipSimilarity(SimilarityFilter(model=TINY_CLIP, threshold=0.28), stored=tmp_path)(unstored)
