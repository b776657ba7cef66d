"""Captions: the public entry point run.py and config.py import (implementation in ``curate.captioners``).

A pending record's captions are made in up to three stages, in this order:

1. ``CocaCaptioner`` (optional, a Ray actor): a caption from open_clip CoCa per image.
2. ``Captioner``: metadata captions (per-source templates over title, creator, date,
   medium, culture, description), the combined ones (model caption + ", by CREATOR,
   DATE"), and the chosen caption (``caption`` / ``caption_origin`` -> KEY.txt) by the
   pipeline's ``choose`` order. Every caption made stays in the ``captions`` column
   (JSON list of ``{text, origin, lang?, model?}``) -> KEY.json.
3. ``ClipSimilarity`` (optional, a Ray actor): rejects records whose chosen caption
   scores below the threshold against the image (``low_clip_similarity``).

The model stages read encoded image bytes from a ``jpg`` column.
"""

from curate.captioners.coca import CocaCaptioner
from curate.captioners.config import (CaptionConfig, DecodingOptions, MetadataCaptions, ModelCaptions,
                                      SimilarityFilter, SourceCaptions)
from curate.captioners.policy import Captioner
from curate.captioners.similarity import SCORE_COLUMN, ClipSimilarity
from curate.captioners.text import COLUMN as CAPTIONS_COLUMN

__all__ = ["CAPTIONS_COLUMN", "SCORE_COLUMN", "CaptionConfig", "Captioner", "ClipSimilarity", "CocaCaptioner",
           "DecodingOptions", "MetadataCaptions", "ModelCaptions", "SimilarityFilter", "SourceCaptions"]
