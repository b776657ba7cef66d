"""The embedding stage on a few images, called as a plain function (no Ray)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from curate import pixels
from curate.score import clip, embed, images

from .conftest import image_batch, jpeg

TINY = clip.ClipSpec(model="cleanroom-tiny-clip")


@pytest.fixture(scope="module")
def stage():
    torch.manual_seed(0)
    return embed.Embed(TINY, batch_size=2)  # 3 images take two forward passes


def test_rows_with_an_image_get_a_unit_embedding_the_others_null(stage):
    batch = image_batch({"a": jpeg(1), "wide": jpeg(2, 300, 120), "rejected": None, "a-again": jpeg(1)})
    out = stage(batch)
    assert out[embed.EMBEDDING].type == pa.list_(pa.float32(), 32)
    rows, vectors = embed.matrix(out)
    assert rows == [0, 1, 3] and out[embed.EMBEDDING][2].as_py() is None
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # "a" is embedded in a pass of 2 and "a-again" in a pass of 1: kernels may sum in another
    # order for another batch size, so the same image gives the same vector up to rounding.
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
    assert out.drop_columns([embed.EMBEDDING]).equals(batch)


def test_embedding_is_the_models_own_transform_and_encoder(stage):
    batch = image_batch({"a": jpeg(3, 120, 90)})
    _, vectors = embed.matrix(stage(batch))
    loaded = stage.loaded
    with torch.no_grad():
        bare = loaded.model.encode_image(loaded.preprocess(images.rgb(jpeg(3, 120, 90), "a")).unsqueeze(0))
    assert np.allclose(vectors[0], torch.nn.functional.normalize(bare, dim=-1)[0].numpy(), atol=1e-6)


def test_bf16_autocast_stays_close_to_fp32(stage):
    half = embed.Embed(clip.ClipSpec(model="cleanroom-tiny-clip", precision="bf16"))
    half.loaded.model.load_state_dict(stage.loaded.model.state_dict())
    batch = image_batch({"a": jpeg(4), "b": jpeg(5)})
    _, full_vectors = embed.matrix(stage(batch))
    _, half_vectors = embed.matrix(half(batch))
    assert np.allclose(np.linalg.norm(half_vectors, axis=1), 1, atol=1e-5)
    assert (full_vectors * half_vectors).sum(axis=1).min() > 0.99


def test_an_undecodable_image_fails_its_record_and_the_others_are_embedded(stage):
    out = stage(image_batch({"bad": b"<html>not a jpeg</html>", "good": jpeg(1)}))
    bad, good = out.to_pylist()
    assert (bad["status"], bad["reason"]) == ("failed", "decode_error")
    assert bad["detail"] == (f"score: embedder open_clip:cleanroom-tiny-clip/random-init: record {bad['key']}: "
                             "cannot decode its stored image (cannot identify image file (23 bytes, starting "
                             f"3c68746d6c3e6e6f) as {', '.join(pixels.FORMATS)})")
    assert bad[embed.EMBEDDING] is None and good["status"] == "pending" and len(good[embed.EMBEDDING]) == 32


def test_embed_dim_comes_from_the_config_without_loading_weights():
    assert embed.embed_dim(TINY) == 32
    assert embed.embed_dim(clip.ClipSpec(model="ViT-L-14", pretrained="openai")) == 768
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        embed.embed_dim(clip.ClipSpec(model="ViT-Q-99"))
