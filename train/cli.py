"""``cleanroom train autoencoder|diffusion CONFIG.yaml [--shards PATTERN] [--out DIR] [--resume]``.

`add_commands` hangs these onto the ``cleanroom`` parser; ``python -m train.cli`` is the same
command line, as a module ``accelerate launch -m`` can start.
Launch on several GPUs or nodes with ``accelerate launch -m train.cli train diffusion ...``
(see docs/accelerate.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from train import config as config_io
    from train.loop import train

    config = config_io.with_shards(config_io.load(Path(args.config)), args.shards)
    out = Path(args.out) if args.out else Path("out") / f"train-{config.name}"
    summary = train(args.job, config, out, resume=args.resume)
    print(json.dumps({"job": summary.job, "step": summary.step, "final": str(summary.final) if summary.final else None,
                      "samples_per_second": round(summary.samples_per_second, 2),
                      "data_wait_share": round(summary.data_wait_share, 3),
                      "last_logs": {k: round(v, 5) for k, v in summary.last_logs.items()}}, indent=2))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the autoencoder or the diffusion model on shards")
    jobs = train.add_subparsers(dest="job", required=True)
    for job, about in (("autoencoder", "train (or fine-tune) the autoencoder: reconstruction + KL"),
                       ("diffusion", "train (or fine-tune) the UNet on the frozen autoencoder's latents")):
        command = jobs.add_parser(job, help=about)
        command.add_argument("config", help="training config YAML, e.g. pipelines/train-tiny.yaml")
        command.add_argument("--shards", help="shards: a folder, a file, a brace pattern or an fsspec URL "
                                              "(default: data.shards of the config)")
        command.add_argument("--out", help="run folder (default: out/train-NAME); the job writes OUT/<job>/")
        command.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT")
        command.set_defaults(handler=_train)


if __name__ == "__main__":
    from curate.cli import main

    sys.exit(main())
