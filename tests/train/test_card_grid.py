"""The model card's sample grid: drawn from the final model with the card's prompts and seeds, saved beside the
card and linked by a relative name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from audit import export as release
from train import generate


def test_exported_card_links_the_grid_of_its_prompts_beside_it(demo_model: Path, tmp_path: Path):
    folder = Path(release.export(demo_model, tmp_path / "sd")["pipeline"])
    text = (folder / "MODEL_CARD.md").read_text()
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text) == [generate.CARD_GRID]
    assert str(tmp_path) not in text and str(demo_model) not in text  # nothing of this machine's folders
    model = generate.load(demo_model)
    settings, prompts = generate.card_settings(), generate.card_prompts(model.config)
    for i, prompt in enumerate(prompts):
        assert f"{i + 1}. {json.dumps(prompt)}, seed {settings.seed + i}" in text
    generate.sample_to_folder(model, prompts, settings, tmp_path / "again")
    shipped = np.asarray(Image.open(folder / generate.CARD_GRID))
    assert np.array_equal(shipped, np.asarray(Image.open(tmp_path / "again" / "grid.png")))
