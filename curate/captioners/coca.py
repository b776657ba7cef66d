"""Model captions: open_clip CoCa ``generate`` on each pending record's image.

The model is named like every open_clip model here (``curate.score.clip.ClipSpec``: name +
pretrained tag, or a local checkpoint), and each caption records that name, so a
caption from random test weights can never pass for a real model's.

Determinism: beam search has no randomness. Sampling (top_k, top_p) draws each image's
caption on its own from a generator seeded by (seed, record key): the caption then does
not depend on which records Ray put in the same batch, at the price of batching, which
is one reason beam search is the default.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from curate import records
from curate.captioners import text as captext
from curate.captioners._models import autocast, pending_images
from curate.captioners.config import CaptionConfig, ModelCaptions, register_captioner
from curate.score import clip

ORIGIN = "model"
_START, _END = "<start_of_text>", "<end_of_text>"
TRANSFORMERS_HINT = ("open_clip CoCa generate() needs transformers; 4.57 and later lack the BeamSearchScorer it "
                     "uses: pip install transformers==4.56.2")


def sample_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{key}".encode()).digest()[:8], "big") >> 1


def decode(tokens: Any) -> str:
    """Generated token ids -> text: up to the first end token, without the start token."""
    import open_clip

    return open_clip.decode(tokens).split(_END)[0].replace(_START, "")


def _initialise_decoder_projection(model: Any) -> None:
    """Give a random-init CoCa a defined caption head.

    open_clip allocates ``text_decoder.text_projection`` with ``torch.empty`` and never
    initialises it (``MultimodalTransformer.init_parameters`` is broken: it reads a
    missing ``self.transformer``), so without weights every logit is whatever memory held,
    zeros in practice: all tokens tie and beam search emits punctuation. Loaded weights
    overwrite it, so only random-init models (tests, the offline demo) need this.
    """
    import torch
    from open_clip import coca_model

    if isinstance(model, coca_model.CoCa):  # anything else is refused by CocaCaptioner
        torch.nn.init.normal_(model.text_decoder.text_projection, std=model.text_decoder.width ** -0.5)


@register_captioner
class CocaCaptioner:
    """Stage (a Ray actor: it loads the model once): pending records -> a model caption each."""

    kind = "coca"
    Settings = ModelCaptions

    def __init__(self, config: CaptionConfig):
        if config.captioner is None:
            raise ValueError("captions.captioner is not configured: there is no captioning model to load")
        from open_clip import coca_model

        if not coca_model._has_transformers:
            raise ImportError(TRANSFORMERS_HINT)
        self.settings = config.captioner
        self.max_chars = config.max_chars
        self.loaded = clip.load(self.settings.model, initialise=_initialise_decoder_projection)
        self.name = self.settings.model.describe()
        if not isinstance(self.loaded.model, coca_model.CoCa):
            raise ValueError(f"{self.name} is a {type(self.loaded.model).__name__}, which cannot write captions; "
                             f"name a CoCa model (coca_* configs)")

    def generate(self, images: Any, keys: list[str]) -> list[str]:
        """Decoded captions for a batch of preprocessed images (keys seed sampling)."""
        import torch

        options = self.settings.decoding
        kwargs = options.generate_kwargs()
        images = images.to(self.loaded.device)
        with torch.no_grad(), autocast(self.loaded.device, self.loaded.dtype):
            if not options.samples:
                return [decode(t) for t in self.loaded.model.generate(images, **kwargs)]
            texts = []
            for image, key in zip(images, keys):
                with torch.random.fork_rng(devices=self._rng_devices()):
                    torch.manual_seed(sample_seed(options.seed, key))
                    texts.append(decode(self.loaded.model.generate(image[None], **kwargs)[0]))
            return texts

    def _rng_devices(self) -> list[int]:
        import torch

        return [] if self.loaded.device == "cpu" else [torch.device(self.loaded.device).index or 0]

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        table = records.conform(table)
        rows = table.to_pylist()
        indices, tensors = pending_images(rows, self.loaded.preprocess, f"caption model {self.name}")
        size = self.settings.batch_size
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            texts = self.generate(torch.stack(tensors[start:start + size]), [rows[i]["key"] for i in chunk])
            for i, made in zip(chunk, texts):
                text = captext.finish(made, self.max_chars)
                new = [captext.entry(text, ORIGIN, model=self.name)] if text else []
                rows[i][captext.COLUMN] = captext.dump(
                    captext.replace(captext.read(rows[i].get(captext.COLUMN)), {ORIGIN}, new))
        return pa.Table.from_pylist(rows, schema=captext.with_column(table.schema))

