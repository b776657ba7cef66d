"""Shared helpers: JPEG bytes made in the test, a tiny 768-d open_clip config registered by name."""

import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate import records
from curate.score import clip

# The width of CLIP ViT-L/14, which LAION's aesthetic heads take, on a two-layer toy tower.
TINY_768 = {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def clip768(tmp_path_factory) -> clip.ClipSpec:
    import open_clip

    folder = tmp_path_factory.mktemp("clip-configs")
    (folder / "cleanroom-test-clip-768.json").write_text(json.dumps(TINY_768))
    clip.register_bundled_configs()
    open_clip.add_model_config(folder)
    return clip.ClipSpec(model="cleanroom-test-clip-768")


def jpeg(seed: int, width: int = 96, height: int = 80) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((5, 5, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def image_batch(images: dict[str, bytes | None]) -> pa.Table:
    """Records keyed by name, pending when they have image bytes, rejected otherwise, with a ``jpg`` column."""
    rows = []
    for name, data in images.items():
        row = records.candidate("met", name, license="CC0-1.0", original_width=96, original_height=80)
        rows.append(row if data else records.finish(row, records.REJECTED, "min_side"))
    table = records.to_table(rows)
    return table.append_column("jpg", pa.array(list(images.values()), pa.binary()))
