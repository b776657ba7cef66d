"""Heads in their published weight formats: saved from the original architectures, loaded by our code.

The reference classes below restate how LAION defines each model, independently of
``curate.score``, so a drift in our architectures or key names fails here.
"""

import io

import numpy as np
import pyarrow as pa
import pytest
import timm
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from curate import records
from curate.score import aesthetic, embed, nsfw, watermark
from curate.score.aesthetic import AestheticConfig
from curate.score.clip import ClipSpec
from curate.score.weights import WeightsError

from .conftest import image_batch, jpeg


class LaionAestheticMLP(nn.Module):
    """improved-aesthetic-predictor's ``MLP`` (inference part), as in its simple_inference.py."""

    def __init__(self, input_size):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(self.input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def laion_watermark_model():
    """LAION-5B-WatermarkDetection's example_use.py model (timm's efficientnet_b3a is efficientnet_b3)."""
    model = timm.create_model("efficientnet_b3", pretrained=False, num_classes=2)
    model.classifier = nn.Sequential(
        nn.Linear(in_features=1536, out_features=625), nn.ReLU(), nn.Dropout(p=0.3),
        nn.Linear(in_features=625, out_features=256), nn.ReLU(), nn.Linear(in_features=256, out_features=2))
    return model.eval()


def unit(rows, dim, seed=0):
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def with_embeddings(vectors):
    """Records with an ``embedding`` column; one more record without (not pending)."""
    table = records.to_table([records.candidate("met", str(i)) for i in range(len(vectors) + 1)])
    return embed.with_rows(table, embed.EMBEDDING, list(range(len(vectors))), vectors,
                           embed.embedding_type(vectors.shape[1]))


def test_improved_aesthetic_mlp_file_scores_like_laions_class(tmp_path):
    torch.manual_seed(0)
    reference = LaionAestheticMLP(768).eval()
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(reference.state_dict(), path)
    vectors = unit(4, 768)
    out = aesthetic.Aesthetic(AestheticConfig(weights=str(path), min_score=5.0), dim=768)(with_embeddings(vectors))
    with torch.no_grad():
        expected = reference(torch.from_numpy(vectors)).squeeze(-1).numpy()
    assert out[aesthetic.SCORE].type == pa.float32()
    assert np.allclose(out[aesthetic.SCORE].to_numpy(zero_copy_only=False)[:4], expected, atol=1e-6)
    assert out[aesthetic.SCORE][4].as_py() is None


def test_linear_aesthetic_head_file_scores_like_nn_linear(tmp_path):
    torch.manual_seed(1)
    reference = nn.Linear(768, 1)
    path = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save(reference.state_dict(), path)
    vectors = unit(3, 768)
    out = aesthetic.Aesthetic(AestheticConfig(format="linear", weights=str(path)), dim=768)(with_embeddings(vectors))
    with torch.no_grad():
        expected = reference(torch.from_numpy(vectors)).squeeze(-1).numpy()
    assert np.allclose(out[aesthetic.SCORE].to_numpy(zero_copy_only=False)[:3], expected, atol=1e-6)


def test_aesthetic_mismatches_name_the_file_and_the_expected_shape(tmp_path):
    path = tmp_path / "head.pth"
    torch.save(LaionAestheticMLP(768).state_dict(), path)
    with pytest.raises(WeightsError, match=r"head.pth: .* takes 768-d .* gives 512-d .*layers.0.weight of shape "
                                           r"\(\.\.\., 512\)"):
        aesthetic.Aesthetic(AestheticConfig(weights=str(path)), dim=512)
    with pytest.raises(WeightsError, match=r"head.pth: not a LAION linear aesthetic head state dict: no 'weight'"):
        aesthetic.Aesthetic(AestheticConfig(format="linear", weights=str(path)), dim=768)
    deeper = LaionAestheticMLP(768)
    deeper.layers.append(nn.Linear(1, 1))
    torch.save(deeper.state_dict(), path)
    with pytest.raises(WeightsError, match=r"unexpected keys \['layers.8.bias', 'layers.8.weight'\]"):
        aesthetic.Aesthetic(AestheticConfig(weights=str(path)), dim=768)
    with pytest.raises(FileNotFoundError, match="missing.pth: LAION improved-aesthetic-predictor MLP weights"):
        aesthetic.Aesthetic(AestheticConfig(weights=str(tmp_path / "missing.pth")), dim=768)


@pytest.fixture(scope="module")
def watermark_file(tmp_path_factory):
    torch.manual_seed(0)
    reference = laion_watermark_model()
    path = tmp_path_factory.mktemp("watermark") / "watermark_model_v1.pt"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_watermark_detector_file_gives_laions_softmax_index_0(watermark_file):
    reference, path = watermark_file
    batch = image_batch({"a": jpeg(1, 300, 200), "none": None, "b": jpeg(2, 200, 300)})
    out = watermark.Watermark(watermark.WatermarkConfig(weights=str(path), batch_size=1))(batch)
    laion = T.Compose([T.Resize((256, 256)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    pixels = torch.stack([laion(Image.open(io.BytesIO(jpeg(s, *size))).convert("RGB"))
                          for s, size in ((1, (300, 200)), (2, (200, 300)))])
    with torch.no_grad():
        expected = torch.softmax(reference(pixels), dim=1)[:, 0].numpy()
    scores = out[watermark.SCORE].to_pylist()
    assert scores[1] is None
    assert np.allclose([scores[0], scores[2]], expected, atol=1e-5)


def test_watermark_file_of_another_head_is_named_with_the_shapes(watermark_file, tmp_path):
    reference, _ = watermark_file
    state = reference.state_dict()
    state["classifier.5.weight"] = torch.zeros(3, 256)
    path = tmp_path / "three-classes.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"three-classes.pt: .*classifier.5.weight: expected shape \(2, 256\), "
                                           r"file has \(3, 256\)"):
        watermark.load(str(path))
    (tmp_path / "not-a-checkpoint.pt").write_text("hello")
    with pytest.raises(WeightsError, match="not-a-checkpoint.pt: cannot read"):
        watermark.load(str(tmp_path / "not-a-checkpoint.pt"))


def test_nsfw_head_format_is_an_mlp_read_from_the_file_shapes(tmp_path):
    path = tmp_path / "nsfw.pt"
    nsfw.save_random(path, dim=32, hidden=(16, 8), seed=3)
    state = torch.load(path, weights_only=True)
    assert sorted(state) == [f"layers.{i}.{p}" for i in (0, 2, 4) for p in ("bias", "weight")]
    vectors = unit(3, 32)
    out = nsfw.NsfwHead(nsfw.NsfwHeadConfig(kind="head", weights=str(path)), dim=32)(with_embeddings(vectors))
    h = torch.from_numpy(vectors)
    for i in (0, 2, 4):
        h = h @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
        h = torch.relu(h) if i < 4 else torch.sigmoid(h)
    assert np.allclose(out[nsfw.SCORE].to_numpy(zero_copy_only=False)[:3], h.squeeze(-1).numpy(), atol=1e-6)
    with pytest.raises(WeightsError, match=r"nsfw.pt: the NSFW head takes 32-d .* gives 768-d"):
        nsfw.NsfwHead(nsfw.NsfwHeadConfig(kind="head", weights=str(path)), dim=768)
    torch.save({"layers.0.weight": torch.zeros(2, 32), "layers.0.bias": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match=r"must end in one logit; layers.0.weight has shape \(2, 32\)"):
        nsfw.NsfwHead(nsfw.NsfwHeadConfig(kind="head", weights=str(path)), dim=32)


def test_zero_shot_nsfw_is_the_softmax_mass_on_the_unsafe_prompts():
    torch.manual_seed(0)
    config = nsfw.NsfwZeroShotConfig(kind="zero_shot", unsafe_prompts=["unsafe one", "unsafe two"],
                                     safe_prompts=["a painting", "a drawing", "a photo"])
    stage = nsfw.NsfwZeroShot(config, ClipSpec(model="cleanroom-tiny-clip"))
    prompts = stage.prompts.numpy()
    assert prompts.shape == (5, 32) and np.allclose(np.linalg.norm(prompts, axis=1), 1, atol=1e-5)
    # Controlled inputs: each prompt's own text embedding as the image embedding.
    pnsfw = stage(with_embeddings(prompts))[nsfw.SCORE].to_numpy(zero_copy_only=False)[:5]
    probabilities = torch.softmax(stage.scale * torch.from_numpy(prompts @ prompts.T), dim=1).numpy()
    assert np.allclose(pnsfw, probabilities[:, :2].sum(axis=1), atol=1e-6)
    assert pnsfw[:2].min() > pnsfw[2:].max()
