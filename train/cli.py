"""The trainer's commands: ``train autoencoder|diffusion CONFIG.yaml [--shards PATTERN] [--out DIR] [--resume]``,
``train cache SHARDS --config CONFIG --autoencoder MODEL --out CACHE`` and ``sample``.

`add_commands` hangs them onto the ``cleanroom`` parser of ``curate.cli``, the one entry point, beside
``audit.cli``'s (export, model-card, compare-weights, memorization: they read the curation runs too). Launch on
several GPUs or nodes with ``accelerate launch -m curate.cli train diffusion ...`` (see docs/accelerate.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imports torch: only for the annotation
    from train.generate import SampleSettings


def _train(args: argparse.Namespace) -> int:
    from train import config as config_io
    from train.loop import train

    config = config_io.with_shards(config_io.load(Path(args.config)), args.shards, getattr(args, "cache", None))
    out = Path(args.out) if args.out else Path("out") / f"train-{config.name}"
    summary = train(args.job, config, out, resume=args.resume)
    print(json.dumps({"job": summary.job, "step": summary.step, "final": str(summary.final) if summary.final else None,
                      "samples_per_second": round(summary.samples_per_second, 2),
                      "data_wait_share": round(summary.data_wait_share, 3),
                      "last_logs": {k: round(v, 5) for k, v in summary.last_logs.items()}}, indent=2))
    return 0


def _cache(args: argparse.Namespace) -> int:
    import torch

    from train import cache
    from train import config as config_io

    from curate.cli import from_options

    config = config_io.load(Path(args.config))
    job = from_options(cache.CacheJob, {"shards": config_io.with_shards(config, args.shards).data.shards,
                                        "autoencoder": str(Path(args.autoencoder).resolve()),
                                        "variants": args.variants, "precision": args.precision,
                                        "batch_size": args.batch_size},
                       {"shards": "SHARDS", "autoencoder": "--autoencoder", "variants": "--variants",
                        "precision": "--precision", "batch_size": "--batch-size"})
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    manifest = cache.Builder(config, job, torch.device(device)).build(Path(args.out))
    print(json.dumps({"cache": str(Path(args.out).resolve()), "shards": len(manifest.sources),
                      "samples": sum(s.samples for s in manifest.sources),
                      "left_out": sum(len(s.left_out) for s in manifest.sources), "variants": job.variants,
                      "sizes": [str(geometry) for geometry in manifest.encoders.geometries],
                      "autoencoder": manifest.encoders.autoencoder.name,
                      "text_encoder": manifest.encoders.text_encoder.name}, indent=2))
    return 0


def _add_cache(jobs: argparse._SubParsersAction) -> None:
    command = jobs.add_parser("cache", help="encode shards once with the frozen autoencoder and text encoder, "
                                            "for the diffusion job's --cache")
    command.add_argument("shards", help="curated shards: a folder, a file, a brace pattern or an fsspec URL")
    command.add_argument("--config", required=True, help="the training config the cache is for (resolution or "
                                                         "buckets, each phase's too, crop, flip, seed, "
                                                         "diffusion.conditioning)")
    command.add_argument("--autoencoder", required=True, help="the trained autoencoder (OUT/autoencoder/final)")
    command.add_argument("--out", required=True, help="cache folder; building again re-encodes only changed shards")
    command.add_argument("--variants", type=int, default=4, help="augmented views per sample (one per epoch)")
    command.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="of the stored tensors")
    command.add_argument("--batch-size", type=int, default=8, help="samples encoded together")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    command.set_defaults(handler=_cache)


def _sample(args: argparse.Namespace) -> int:
    import torch

    from train import generate

    if sum(bool(given) for given in (args.prompt, args.prompts, args.image)) != 1:
        raise ValueError("give prompts with --prompt (repeatable) or --prompts FILE, or reference images with "
                         "--image (repeatable) for an image-variations model: exactly one of them")
    prompts = None if args.image else args.prompt or generate.read_prompts(Path(args.prompts))
    settings = _sample_settings(args)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    model = generate.load(Path(args.model), device=device, dtype=dtype)
    if prompts is None:
        paths = generate.variations_to_folder(model, [Path(p) for p in args.image], settings, Path(args.out),
                                              args.images_per_prompt, args.batch_size)
    else:
        paths = generate.sample_to_folder(model, prompts, settings, Path(args.out), args.images_per_prompt,
                                          args.batch_size)
    print(json.dumps({"model": str(model.folder), "out": str(Path(args.out).resolve()), "images": len(paths),
                      "sampler": settings.label, "grid": str(Path(args.out) / "grid.png")}, indent=2))
    return 0


def _sample_settings(args: argparse.Namespace) -> SampleSettings:
    """The sampling settings from the options; one line naming each option that does not validate."""
    from curate.cli import from_options
    from train.generate import SampleSettings

    fields = ("sampler", "karras", "steps", "cfg_scale", "negative_prompt", "width", "height", "seed")
    # An error about the whole (a sampler without Karras sigmas) names the sampler.
    return from_options(SampleSettings, {name: getattr(args, name) for name in fields},
                        {name: f"--{name.replace('_', '-')}" for name in fields}, whole="sampler")


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1")
    return value


def _add_sample(subparsers: argparse._SubParsersAction) -> None:
    from train.sample import SAMPLER_ALIASES, SAMPLERS

    command = subparsers.add_parser("sample")  # its help line is in COMMANDS
    command.add_argument("model", help="model folder (OUT/diffusion/final) or the training run folder OUT")
    command.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    command.add_argument("--prompts", help="a text file, one prompt per line (# comments)")
    command.add_argument("--image", action="append", help="a reference image for an image-variations model "
                                                          "(repeat for several)")
    command.add_argument("--out", required=True, help="folder for the PNGs, grid.png, samples.jsonl")
    command.add_argument("--sampler", default="dpmpp-2m", type=str.lower, choices=[*SAMPLERS, *SAMPLER_ALIASES],
                         help="plms = pndm")
    command.add_argument("--karras", action="store_true", help="Karras sigmas (euler, dpmpp-2m, lms)")
    command.add_argument("--steps", type=int, default=25, help="denoising steps (at least 1)")
    command.add_argument("--cfg-scale", type=float, default=7.5, help="classifier-free guidance scale")
    command.add_argument("--negative-prompt", default="", help="what the guidance steers away from")
    command.add_argument("--width", type=int, help="default: the training resolution")
    command.add_argument("--height", type=int, help="default: the training resolution")
    command.add_argument("--seed", type=int, default=0, help="image i gets seed + i")
    command.add_argument("--images-per-prompt", type=_count, default=1, help="per prompt, or per --image")
    command.add_argument("--batch-size", type=_count, default=4, help="images drawn together")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    command.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="of the weights")
    command.set_defaults(handler=_sample)


Define = Callable[[argparse._SubParsersAction], None]  # adds one command, with its arguments, to a parser


def registered_in(module: str) -> Define:
    """The command that `module`'s ``register(subparsers)`` defines, imported only when it is called."""
    return lambda subparsers: importlib.import_module(module).register(subparsers)


def add_lazy_commands(subparsers: argparse._SubParsersAction, commands: dict[str, tuple[Define, str]],
                      chosen: str | None = None) -> None:
    """Of `commands` (name -> what defines it, its help line), only ``chosen`` (the command to run, if any) gets
    its arguments; the others are listed by name and help line, so `cleanroom --help` loads none of them."""
    for name, (define, about) in commands.items():
        if name == chosen:
            define(subparsers)
        else:
            subparsers.add_parser(name, help=about)


# Commands whose modules import torch, each with what defines it and its help line (see add_lazy_commands).
COMMANDS: dict[str, tuple[Define, str]] = {
    "sample": (_add_sample, "draw images from a trained model: PNGs with their settings in the PNG text, and a grid"),
}


def add_commands(subparsers: argparse._SubParsersAction, chosen: str | None = None) -> None:
    """The trainer's commands; of COMMANDS, only ``chosen`` (the command to run, if any) gets its arguments."""
    add_lazy_commands(subparsers, COMMANDS, chosen)
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
        if job == "diffusion":
            command.add_argument("--cache", help="a latent cache (`train cache`) to read instead of encoding the "
                                                 "shards' images (default: data.cache of the config)")
        command.set_defaults(handler=_train)
    _add_cache(jobs)
