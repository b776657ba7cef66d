"""open_clip loading: by registered name, from a local checkpoint, and clear errors."""

import pytest
import torch
from PIL import Image

from curate.score import clip

TINY = clip.ClipSpec(model="cleanroom-tiny-clip")


def test_tiny_model_loads_by_name_frozen_with_its_transform():
    loaded = clip.load(TINY)
    assert loaded.embed_dim == 32 and loaded.device == "cpu"
    assert not any(p.requires_grad for p in loaded.model.parameters())
    pixels = loaded.preprocess(Image.new("RGB", (120, 90), "red"))
    assert tuple(pixels.shape) == (3, 64, 64)
    assert tuple(loaded.tokenizer(["a red square"]).shape) == (1, 77)


def test_local_checkpoint_gives_the_same_weights(tmp_path):
    torch.manual_seed(0)
    original = clip.load(TINY)
    path = tmp_path / "tiny.pt"
    torch.save(original.model.state_dict(), path)
    reloaded = clip.load(clip.ClipSpec(model="cleanroom-tiny-clip", checkpoint=str(path)))
    image = original.preprocess(Image.new("RGB", (64, 64), "blue")).unsqueeze(0)
    assert torch.equal(original.model.encode_image(image), reloaded.model.encode_image(image))
    assert reloaded.model is not original.model


def test_bad_specs_fail_before_any_image_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        clip.load(clip.ClipSpec(model="ViT-Q-99"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        clip.load(clip.ClipSpec(model="cleanroom-tiny-clip", checkpoint=str(tmp_path / "missing.pt")))
    with pytest.raises(ValueError, match="not both"):
        clip.ClipSpec(model="ViT-B-32", pretrained="openai", checkpoint="x.pt")
    assert clip.ClipSpec(model="ViT-L-14", pretrained="openai").describe() == "open_clip:ViT-L-14/openai"
