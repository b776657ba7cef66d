"""``cleanroom export MODEL --out DIR [--sampler NAME] [--single-file PATH] [--no-card]``.

The formats are train.export's (a diffusers StableDiffusionPipeline folder and a single-file LDM
checkpoint); what the command adds reads the curation runs behind the training shards: the model card
and the model license beside the weights (``audit.card.release_files``), so a model from cleanroom
leaves with its provenance. Both are made before any weights are written, so a model whose shards
are not in a curation run folder fails with nothing written; ``--no-card`` exports it without them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from audit import card
from train import export as formats
from train import sample


def export(model_path: Path, out: Path, sampler: str = "dpmpp-2m", karras: bool = True,
           single_file: Path | None = None, with_card: bool = True) -> dict[str, Any]:
    """train.export's pipeline folder and single file, with the card and license unless `with_card` is off."""
    return formats.export(model_path, out, sampler, karras, single_file,
                          extras=card.release_files if with_card else None)


def _export(args: argparse.Namespace) -> int:
    karras = sample.sampler(args.sampler).karras and not args.no_karras
    summary = export(Path(args.model), Path(args.out), args.sampler, karras,
                     Path(args.single_file) if args.single_file else None, with_card=not args.no_card)
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser("export")  # its help line is in audit.cli.COMMANDS
    command.add_argument("model", help="model folder (OUT/diffusion/final) or the training run folder OUT")
    command.add_argument("--out", required=True, help="pipeline folder to create (must not exist)")
    command.add_argument("--sampler", default="dpmpp-2m",
                         help=f"the pipeline's scheduler: {', '.join(sample.SAMPLERS)} (default: dpmpp-2m)")
    command.add_argument("--no-karras", action="store_true",
                         help="plain sigmas; by default Karras sigmas where the sampler offers them (euler, "
                              "dpmpp-2m, lms)")
    command.add_argument("--single-file", help="the single-file checkpoint (default: OUT/<model name>.safetensors)")
    command.add_argument("--no-card", action="store_true",
                         help=f"leave out {card.CARD} and the license (needed when the training shards are not "
                              f"in a curation run folder, so there is no catalog to describe)")
    command.set_defaults(handler=_export)
