"""The audit commands: ``export``, ``model-card``, ``compare-weights`` and ``memorization``.

`add_commands` hangs them onto the ``cleanroom`` parser of ``curate.cli``, the one entry point, next to
``train.cli``'s. Each module imports torch or reads a model, so a command gets its arguments only when it is
the one to run (``train.cli.add_lazy_commands``): ``cleanroom --help`` imports none of them.
"""

from __future__ import annotations

import argparse

from train.cli import Define, add_lazy_commands, registered_in

COMMANDS: dict[str, tuple[Define, str]] = {
    "export": (registered_in("audit.export"), "write a trained model as a diffusers StableDiffusionPipeline "
                                              "folder and a single-file (LDM) checkpoint, with its model card"),
    "model-card": (registered_in("audit.card"), "write MODEL_CARD.md for a trained model from its training "
                                                "records and the catalogs of its curation runs"),
    "compare-weights": (registered_in("audit.compare"), "per-module cosine similarity of two models' UNet and "
                                                        "VAE weights (near 0: trained apart; near 1: a fine-tune)"),
    "memorization": (registered_in("audit.memorization"), "find the training images nearest to generated samples "
                                                          "(CLIP cosine) and flag copies"),
}


def add_commands(subparsers: argparse._SubParsersAction, chosen: str | None = None) -> None:
    """The audit commands; of COMMANDS, only ``chosen`` (the command to run, if any) gets its arguments."""
    add_lazy_commands(subparsers, COMMANDS, chosen)
