"""Training throughput: our diffusion loop vs a plain loop written as diffusers' train_text_to_image.

Both train the same tiny UNet on the same frozen tiny autoencoder and open_clip text tower,
with the same batch, resolution, mixed precision, min-SNR weighting, clipping and EMA, on the
same generated shards. The plain loop reads them the usual webdataset way (decode("pil") and
torchvision transforms) and steps as train_text_to_image does. Warm-up steps are not timed;
rounds alternate between the loops so that load from other processes hits both alike. Run::

    python benchmarks/train.py [--steps 40] [--warmup 5] [--rounds 2] [--batch 8] [--resolution 64]

With ``--cached`` it sets our loop encoding on the fly beside our loop reading a latent cache
(`train.cache`, built once from the same shards with one view per epoch the run reaches; the
build is not timed): the same model, batch and steps, the ratio cached / on the fly.

With ``--mfu`` it times our loop alone and prints samples/s, the FLOP/s they amount to and the model
FLOP utilisation: the FLOPs of one training step (UNet forward and backward, text encoder, autoencoder
encode) are counted with torch's FlopCounterMode on the meta device, and the peak is ``--peak-tflops``
or, on a GPU the table knows (H100, H200, A100), its dense bf16 peak. ``--count-only`` prints the
count per sample and what it predicts at ``--assume-mfu`` without training, e.g. for SD v1's sizes::

    python benchmarks/train.py --mfu --precision bf16 --config sd1-base --resolution 512 --batch 8
    python benchmarks/train.py --config sd1-base --resolution 512 --count-only
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This script is named like the package it measures: keep its own folder from shadowing `train`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import webdataset as wds  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import train  # noqa: E402,F401,I001  (installs the torchvision fix before anything imports torchvision)
from train import models, objective  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.loop import Run  # noqa: E402


SHARDS, PER_SHARD = 4, 64
# The text encoder each benchmarked size is conditioned on: one as wide as its UNet's cross-attention.
TEXT_ENCODERS = {"tiny": {"model": "cleanroom-tiny-text", "layer": "penultimate"},
                 "sd1-base": {"model": "ViT-L-14", "layer": "last"}}
# Dense bf16/fp16 tensor-core peaks in TFLOP/s (NVIDIA data sheets; SXM unless named), most specific name first.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0), ("A100", 312.0))


def make_shards(folder: Path, shards: int = SHARDS, per_shard: int = PER_SHARD, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    for s in range(shards):
        with wds.TarWriter(str(folder / f"shard-{s:05d}.tar")) as sink:
            for i in range(per_shard):
                width, height = (int(v) for v in rng.integers(96, 256, size=2))
                base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(base).resize((width, height), Image.BILINEAR).save(buffer, "JPEG", quality=90)
                key = f"bench-{s:02d}{i:04d}"
                sink.write({"__key__": key, "jpg": buffer.getvalue(), "txt": f"a generated picture number {i}",
                            "json": {"key": key, "license": "CC0-1.0"}})
    return str(folder)


def config(shards: str, autoencoder: Path, args: argparse.Namespace) -> TrainConfig:
    loop = {"steps": 10**6, "checkpoint_every": 10**6, "validate_every": 10**6, "log_every": 10}
    return TrainConfig.model_validate({
        "name": "bench", "seed": 0,
        "data": {"shards": shards, "resolution": args.resolution, "batch_size": args.batch, "shuffle_buffer": 64,
                 "caption_dropout": 0.1, "crop": "random", "flip": True, "workers": 0},
        "accelerate": {"mixed_precision": args.precision, "log_with": "none"},
        "autoencoder": {"model": args.config, "loop": loop},
        "diffusion": {"model": args.config, "autoencoder": str(autoencoder), "snr_gamma": 5.0,
                      "conditioning": TEXT_ENCODERS[args.config], "ema": {"decay": 0.999}, "loop": loop,
                      "compute": {"attention": args.attention, "compile": args.compile,
                                  "channels_last": args.channels_last,
                                  "gradient_checkpointing": args.gradient_checkpointing}},
    })


def ours(cfg: TrainConfig, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    run = Run("diffusion", cfg, out, resume=False)
    run.train(stop_at=args.warmup)
    summary = run.train(stop_at=args.warmup + args.steps)  # continues the same run, timed
    return summary.samples_per_second, summary.data_wait_share


def plain(cfg: TrainConfig, args: argparse.Namespace) -> tuple[float, float]:
    """train_text_to_image's loop body, on a webdataset stream read the common way."""
    from accelerate import Accelerator
    from diffusers import AutoencoderKL
    from diffusers.training_utils import EMAModel, compute_snr
    from torchvision import transforms

    job = cfg.diffusion
    accelerator = Accelerator(mixed_precision=args.precision)
    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(job.autoencoder).requires_grad_(False)
    text_encoder = models.ConditioningEncoder(job.conditioning)
    unet = models.build("unet", job.model)
    noise_scheduler = objective.noise_scheduler(job.noise, job.prediction)
    ema_unet = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=job.optim.lr, weight_decay=job.optim.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    preprocess = transforms.Compose([
        transforms.Resize(args.resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.RandomCrop(args.resolution), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

    def caption(text: str) -> str:
        return "" if np.random.random() < cfg.data.caption_dropout else text  # proportion_empty_prompts

    dataset = (wds.WebDataset(sorted(str(p) for p in Path(cfg.data.shards).glob("*.tar")), resampled=True,
                              shardshuffle=False)
               .shuffle(cfg.data.shuffle_buffer).decode("pil").to_tuple("jpg", "txt")
               .map_tuple(lambda im: preprocess(im.convert("RGB")), caption))
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=cfg.data.batch_size, num_workers=0)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    batches = iter(dataloader)
    timed = waited = 0.0
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        pixel_values, captions = next(batches)
        wait = time.perf_counter() - started
        with accelerator.accumulate(unet), accelerator.autocast():
            latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],))
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(list(captions), pixel_values, None)
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
            snr = compute_snr(noise_scheduler, timesteps)
            mse_loss_weights = torch.stack([snr, 5.0 * torch.ones_like(timesteps)], dim=1).min(dim=1)[0] / snr
            loss = F.mse_loss(model_pred.float(), noise.float(), reduction="none")
            loss = (loss.mean(dim=list(range(1, len(loss.shape)))) * mse_loss_weights).mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), job.optim.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            ema_unet.step(unet.parameters())
        if step >= args.warmup:
            timed += time.perf_counter() - started
            waited += wait
    return args.steps * args.batch / timed, waited / timed


def cached_against_on_the_fly(cfg: TrainConfig, root: Path, args: argparse.Namespace) -> None:
    from train import cache

    samples = (args.warmup + args.steps) * args.batch
    views = -(-samples // (SHARDS * PER_SHARD))  # one per epoch the run reaches
    job = cache.CacheJob(shards=cfg.data.shards, autoencoder=cfg.diffusion.autoencoder, variants=views,
                         precision="fp16")
    cache.Builder(cfg, job, torch.device("cpu")).build(root / "cache")
    cached = cfg.model_copy(update={"data": cfg.data.model_copy(update={"cache": str(root / "cache")})})
    results: dict[str, list[tuple[float, float]]] = {"on the fly": [], "cached": []}
    for round_ in range(args.rounds):
        results["on the fly"].append(ours(cfg, root / f"fly-{round_}", args))
        results["cached"].append(ours(cached, root / f"cached-{round_}", args))
    report(results, args, f"{views} cached views per sample, fp16")
    speed = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
    print(f"ratio cached/on the fly: {speed['cached'] / speed['on the fly']:.2f}")


def counted(action) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        result = action()
    return counter.get_total_flops(), result


def step_flops(cfg: TrainConfig) -> dict[str, int]:
    """FLOPs of one diffusion training step per process, by part, counted on the meta device (shapes only: no
    weights, no memory, any size). Model FLOPs, as MFU counts them: gradient checkpointing's recomputation is
    left out. The text encoder and autoencoder run only when encoding on the fly; a latent cache holds both."""
    from diffusers import AutoencoderKL

    job, batch, side = cfg.diffusion, cfg.data.batch_size, cfg.data.resolution
    with torch.device("meta"):
        unet = models.build("unet", job.model, job.overrides)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(job.autoencoder))
        encoder = models.ConditioningEncoder(job.conditioning.model_copy(update={"pretrained": None}), "meta")
        pixels = torch.zeros(batch, 3, side, side)
        with torch.no_grad():
            flops = {}
            flops["autoencoder encode"], latents = counted(lambda: vae.encode(pixels).latent_dist.sample())
            flops["text encoder"], states = counted(
                lambda: encoder(["a caption"] * batch, pixels, torch.zeros(batch, dtype=torch.bool)))
        timesteps = torch.zeros(batch, dtype=torch.long)
        flops["unet forward+backward"], _ = counted(
            lambda: unet(latents, timesteps, states).sample.float().square().mean().backward())
    return flops


def print_flops(flops: dict[str, int], batch: int) -> None:
    for part, count in flops.items():
        print(f"  {part:<24}{count / batch / 1e9:>12.2f} GFLOP per sample")
    on_the_fly, cached = sum(flops.values()), flops["unet forward+backward"]
    print(f"  {'on the fly':<24}{on_the_fly / batch / 1e9:>12.2f} GFLOP per sample")
    print(f"  {'from a latent cache':<24}{cached / batch / 1e9:>12.2f} GFLOP per sample")


def device_peak(args: argparse.Namespace) -> tuple[float | None, str]:
    """The peak FLOP/s that MFU is measured against, and where it came from."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12, f"{args.peak_tflops:g} TFLOP/s from --peak-tflops"
    if not torch.cuda.is_available():
        return None, "on a CPU MFU needs a peak: give --peak-tflops"
    name = torch.cuda.get_device_name()
    peak = next((tflops for key, tflops in PEAK_TFLOPS if key in name), None)
    if peak is None:
        return None, f"{name} is not in the table: give --peak-tflops"
    if args.precision == "no":
        return None, f"{name}: the table has bf16/fp16 peaks and this run is fp32: give --peak-tflops"
    return peak * 1e12, f"{peak:g} TFLOP/s, {name} dense {args.precision}"


def utilisation(cfg: TrainConfig, root: Path, args: argparse.Namespace) -> None:
    flops = step_flops(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{args.config} UNet, batch {args.batch}, {args.resolution} px, precision {args.precision}, on {device}; "
          f"one training step (one process) counted:")
    print_flops(flops, args.batch)
    speeds = [ours(cfg, root / f"mfu-{round_}", args)[0] for round_ in range(args.rounds)]
    speed = statistics.median(speeds)
    achieved = sum(flops.values()) / args.batch * speed
    peak, source = device_peak(args)
    rate = f"{achieved / 1e12:.1f} TFLOP/s" if achieved >= 1e12 else f"{achieved / 1e9:.2f} GFLOP/s"
    print(f"{args.steps} timed steps x {args.rounds} rounds (median): {speed:.2f} samples/s, {rate} achieved")
    print(f"MFU: {achieved / peak:.1%} of {source}" if peak else f"MFU: {source}")


def count_only(cfg: TrainConfig, args: argparse.Namespace) -> None:
    flops = step_flops(cfg)
    peak = (args.peak_tflops or 989.0) * 1e12
    print(f"{args.config} UNet at {args.resolution} px, batch {args.batch}: one training step counted on the "
          f"meta device")
    print_flops(flops, args.batch)
    for name, count in (("on the fly", sum(flops.values())), ("from a latent cache", flops["unet forward+backward"])):
        speed = args.assume_mfu * peak * args.batch / count
        print(f"at {args.assume_mfu:.0%} MFU of {peak / 1e12:g} TFLOP/s: {speed:.0f} samples/s per device {name}")


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace, note: str = "") -> None:
    speed = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
    wait = {name: statistics.median(r[1] for r in runs) for name, runs in results.items()}
    print(f"tiny UNet, batch {args.batch}, {args.resolution} px, precision {args.precision}, "
          f"{args.steps} timed steps x {args.rounds} rounds (median), torch threads {torch.get_num_threads()}"
          + (f", {note}" if note else ""))
    print(f"{'loop':<12}{'samples/s':>12}{'data wait share':>18}")
    for name in results:
        print(f"{name:<12}{speed[name]:>12.2f}{wait[name]:>18.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="bf16")
    parser.add_argument("--cached", action="store_true", help="our loop from a latent cache vs on the fly")
    parser.add_argument("--config", choices=sorted(TEXT_ENCODERS), default="tiny",
                        help="the named UNet and autoencoder size (train/configs/)")
    parser.add_argument("--mfu", action="store_true", help="our loop alone: samples/s, FLOP/s and MFU")
    parser.add_argument("--count-only", action="store_true", help="the FLOPs per sample of a step, no training")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: from the table)")
    parser.add_argument("--assume-mfu", type=float, default=0.4, help="--count-only's prediction (of 989 TFLOP/s, "
                        "an H100's dense bf16, unless --peak-tflops)")
    parser.add_argument("--attention", choices=["sdpa", "default"], default="sdpa")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="default: what the size sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The count needs only the autoencoder's config, so --count-only builds no weights at all.
        autoencoder = models.named_config("autoencoder", args.config)
        if args.count_only:
            (root / "autoencoder").mkdir()
            (root / "autoencoder" / "config.json").write_text(json.dumps(autoencoder))
            count_only(config(str(root), root / "autoencoder", args), args)
            return
        (root / "shards").mkdir()
        shards = make_shards(root / "shards")
        torch.manual_seed(0)
        models.build("autoencoder", args.config).save_pretrained(root / "autoencoder")
        cfg = config(shards, root / "autoencoder", args)
        if args.mfu:
            utilisation(cfg, root, args)
            return
        if args.cached:
            cached_against_on_the_fly(cfg, root, args)
            return
        results: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
        for round_ in range(args.rounds):
            results["ours"].append(ours(cfg, root / f"ours-{round_}", args))
            results["plain"].append(plain(cfg, args))
    report(results, args)
    speed = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
    print(f"ratio ours/plain: {speed['ours'] / speed['plain']:.2f}")


if __name__ == "__main__":
    main()
