"""cleanroom audit: tools that read both a curation run and a trained model, and say what the model is.

What belongs here reads across the two halves: the curation runs behind a model's training shards
(``audit.provenance``) with the model folder itself. The model card (``audit.card``), the export that
ships it beside the weights (``audit.export``), the memorization check against the training images
(``audit.memorization``) and the weight comparison with another model (``audit.compare``) live here, and
their commands (``audit.cli``) hang on the ``cleanroom`` parser next to the trainer's.

The dependencies point one way: audit may import ``curate`` and ``train``; ``train`` never imports audit and
``curate`` imports neither, except ``curate.cli``, the one entry point that assembles every command
(tests/test_boundaries.py checks this).
"""

from curate import _torchvision_cpu

_torchvision_cpu.install()
