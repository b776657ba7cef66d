"""Latent caches: the frozen autoencoder and text encoder run once per sample instead of once per step.

``cleanroom train cache SHARDS --config CONFIG --autoencoder MODEL --out CACHE`` writes, per curated
shard, one cache shard (webdataset) whose samples keep the source's key and carry:

    KEY.latents.npy   the autoencoder's latent distribution (mean and log-variance, DiagonalGaussian
                      parameters) of `variants` augmented views, (variants, 2 x channels, h, w): view v
                      is the crop and flip the on-the-fly stream makes in epoch v
    KEY.states.npy    the text encoder's states of the caption, (tokens, width)
    KEY.json          the source sample's provenance json, byte for byte (license fields included)
    KEY.txt           its caption

and ``CACHE/cache.json`` last: the job's settings, which autoencoder and text encoder made it (name and
weights sha256) and, per source shard, its URL, size and sha256, the samples cached and the samples left
out with their reasons. The diffusion job reads a cache with ``data.cache`` (or ``--cache``): it draws
latents from the stored distributions with its own seeded generator, so sampling stays stochastic, and
refuses a cache made by other encoders, at another size, or from shards that have changed since (a
revocation rewrites shards: building again re-encodes only the shards that changed).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fsspec
import numpy as np
import torch
import webdataset as wds
from accelerate.utils import set_seed
from pydantic import Field

from curate.config import ConfigError
from curate.io import atomic_path, write_text_atomic
from curate.shards import INDEX
from train import data, models
from train.config import ConditioningConfig, DataConfig, Strict, TrainConfig

log = logging.getLogger(__name__)

MANIFEST = "cache.json"
LATENTS, STATES = "latents.npy", "states.npy"
_MTIME = 946684800  # fixed, as curate's shards: the same samples give byte-identical cache shards
_CACHE_SHARD = re.compile(r"^\d{5}-.+\.(tar|json)$")
DTYPES = {"fp32": np.float32, "fp16": np.float16}


class CacheJob(Strict):
    """What `cleanroom train cache` was asked to do (saved in cache.json)."""

    shards: str  # the curated shards: a folder, a file, a brace pattern or an fsspec URL
    autoencoder: str  # a diffusers AutoencoderKL folder (OUT/autoencoder/final)
    variants: int = Field(default=4, ge=1)  # augmented views per sample: one per epoch, then repeating
    precision: Literal["fp32", "fp16"] = "fp16"  # of the stored latents and states
    batch_size: int = Field(default=8, ge=1)  # samples encoded together (each with all its views)


class Augment(Strict):
    """The training settings that shape a cached view; a run with other values cannot use the cache."""

    resolution: int
    crop: Literal["center", "random"]
    flip: bool
    seed: int

    @classmethod
    def of(cls, config: TrainConfig) -> "Augment":
        return cls(resolution=config.data.resolution, crop=config.data.crop, flip=config.data.flip,
                   seed=config.seed)


class Identity(Strict):
    """A frozen network by name and by its weights."""

    name: str
    sha256: str


class LeftOut(Strict):
    where: str  # a sample key, or the shard when the tar itself could not be read
    reason: str


class CachedShard(Strict):
    url: str  # the curated shard
    bytes: int
    sha256: str
    cache: str  # the cache shard's file name in CACHE/
    samples: int
    left_out: list[LeftOut] = Field(default_factory=list)


class Encoders(Strict):
    augment: Augment
    autoencoder: Identity
    text_encoder: Identity
    conditioning: ConditioningConfig
    variants: int
    precision: Literal["fp32", "fp16"]


class Manifest(Strict):
    job: CacheJob
    encoders: Encoders
    sources: list[CachedShard]


class ShardMarker(Strict):
    """CACHE/NAME.json beside each cache shard: what it was made from, so a rebuild can skip it."""

    shard: CachedShard
    encoders: Encoders


def check_cacheable(config: TrainConfig) -> None:
    if config.diffusion.conditioning.encoder != "text":
        raise ConfigError("diffusion.conditioning.encoder: a latent cache holds text states; an image-conditioned "
                          "model encodes its images on the fly")
    if config.data.buckets is not None:
        raise ConfigError("data.buckets: a latent cache holds square views of data.resolution; train with aspect "
                          "buckets without data.cache")
    if any(phase.resolution or phase.buckets for phase in config.diffusion.phases):
        raise ConfigError("diffusion.phases: a latent cache holds views of one resolution; train a multi-resolution "
                          "schedule without data.cache")


def text_identity(conditioning: ConditioningConfig, encoder: models.ConditioningEncoder) -> Identity:
    name = f"open_clip {conditioning.model} (pretrained {conditioning.pretrained}, layer {conditioning.layer})"
    return Identity(name=name, sha256=models.fingerprint(encoder.network))


def autoencoder_identity(path: Path, vae: torch.nn.Module) -> Identity:
    return Identity(name=str(Path(path).resolve()), sha256=models.fingerprint(vae))


def digest(url: str) -> tuple[int, str]:
    """(size, sha256) of a shard file, read in chunks."""
    sha, size = hashlib.sha256(), 0
    with fsspec.open(url, "rb") as stream:
        while chunk := stream.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def recorded_digest(url: str) -> tuple[int, str]:
    """(size, sha256) of a shard, from the curation run's index.json when it lists the shard at its current
    size (curate writes the index last, from the tars, also after a revocation), else by reading it."""
    fs, path = fsspec.core.url_to_fs(url)
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    index = f"{folder}/{INDEX}" if folder else INDEX
    size = fs.size(path)
    if fs.exists(index):
        listed = {s.get("tar"): s for s in json.loads(fs.cat_file(index)).get("shards", [])}
        entry = listed.get(name)
        if entry and entry.get("bytes") == size and entry.get("sha256"):
            return size, entry["sha256"]
    return digest(url)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _load_npy(raw: dict[str, Any], field: str) -> np.ndarray:
    if field not in raw:
        raise ValueError(f"cache sample {raw['__key__']} in {raw.get('__url__')}: no {field}")
    try:
        return np.load(io.BytesIO(raw[field]), allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"cache sample {raw['__key__']} in {raw.get('__url__')}: field {field}: {e}") from e


class _Collected(data.BadSamples):
    """Bad samples counted, logged rate-limited, and kept with their reasons for the manifest."""

    def __init__(self, interval: float):
        super().__init__(interval)
        self.left_out: list[LeftOut] = []

    def __call__(self, where: str, error: BaseException) -> None:
        self.left_out.append(LeftOut(where=where, reason=f"{type(error).__name__}: {error}"))
        super().__call__(where, error)


@dataclass
class Builder:
    """Encodes curated shards into cache shards, one shard at a time (memory: one batch)."""

    config: TrainConfig
    job: CacheJob
    device: torch.device

    def __post_init__(self) -> None:
        conditioning = self.config.diffusion.conditioning
        check_cacheable(self.config)
        # The seed first, then the autoencoder, then the text tower, as the diffusion job builds them: a
        # random-initialised tower (the tiny one) then gets the weights the job's own will have.
        set_seed(self.config.seed)
        self.vae = models.load_autoencoder(Path(self.job.autoencoder), self.device)
        self.encoder = models.ConditioningEncoder(conditioning).to(self.device)
        self.encoders = Encoders(augment=Augment.of(self.config),
                                 autoencoder=autoencoder_identity(Path(self.job.autoencoder), self.vae),
                                 text_encoder=text_identity(conditioning, self.encoder),
                                 conditioning=conditioning, variants=self.job.variants, precision=self.job.precision)
        augment = {"caption_dropout": 0.0}  # dropout is drawn when training, per epoch
        self.decode = data.Decoder(self.config.data.model_copy(update=augment), self.config.seed)

    def build(self, out: Path) -> Manifest:
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)  # a cache is complete (cache.json) or not a cache at all
        sources = sorted(data.expand_shards(self.job.shards))
        built = [self._shard(url, out, f"{number:05d}-{url.rstrip('/').rsplit('/', 1)[-1].removesuffix('.tar')}")
                 for number, url in enumerate(sources)]
        manifest = Manifest(job=self.job, encoders=self.encoders, sources=built)
        write_text_atomic(manifest.model_dump_json(indent=2), out / MANIFEST)
        listed = {s.cache for s in built} | {s.cache.removesuffix(".tar") + ".json" for s in built}
        for stale in out.iterdir():  # cache shards of sources no longer in the set
            if _CACHE_SHARD.match(stale.name) and stale.name not in listed:
                stale.unlink()
        return manifest

    def _shard(self, url: str, out: Path, name: str) -> CachedShard:
        size, sha256 = digest(url)
        tar, marker = out / f"{name}.tar", out / f"{name}.json"
        if tar.is_file() and marker.is_file():
            done = ShardMarker.model_validate_json(marker.read_text())
            if (done.encoders, done.shard.url, done.shard.sha256) == (self.encoders, url, sha256):
                log.info("cache shard %s is up to date with %s", tar.name, url)
                return done.shard
        bad = _Collected(self.config.data.bad_sample_log_seconds)
        samples = 0
        with atomic_path(tar) as tmp:
            with wds.TarWriter(str(tmp), encoder=False, mtime=_MTIME) as sink:
                for batch in self._batches(url, bad):
                    for sample in self._encode(batch):
                        sink.write(sample)
                        samples += 1
        shard = CachedShard(url=url, bytes=size, sha256=sha256, cache=tar.name, samples=samples,
                            left_out=bad.left_out)
        write_text_atomic(ShardMarker(shard=shard, encoders=self.encoders).model_dump_json(indent=2), marker)
        log.info("cached %s: %d samples, %d left out -> %s", url, samples, len(bad.left_out), tar.name)
        return shard

    def _batches(self, url: str, bad: _Collected) -> Iterator[list[tuple[dict[str, Any], torch.Tensor]]]:
        batch: list[tuple[dict[str, Any], torch.Tensor]] = []
        for raw in data.read_shard(url, bad):
            try:
                if "json" not in raw:
                    raise ValueError(f"sample {raw['__key__']} in {url}: no json provenance; a cached sample "
                                     f"carries its license record")
                views = torch.stack([self.decode.pixels(raw, view) for view in range(self.job.variants)])
            except ValueError as e:
                bad(raw["__key__"], e)
                continue
            batch.append((raw, views))
            if len(batch) == self.job.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    @torch.no_grad()
    def _encode(self, batch: list[tuple[dict[str, Any], torch.Tensor]]) -> Iterator[dict[str, Any]]:
        dtype = DTYPES[self.job.precision]
        pixels = torch.cat([views for _, views in batch]).to(self.device)
        distributions = self.vae.encode(pixels).latent_dist.parameters.float().cpu()
        distributions = distributions.view(len(batch), self.job.variants, *distributions.shape[1:])
        states = self.encoder([data.caption_of(raw) for raw, _ in batch], None, None).float().cpu()
        for (raw, _), latents, text in zip(batch, distributions, states):
            yield {"__key__": raw["__key__"], LATENTS: _npy(latents.numpy().astype(dtype)),
                   STATES: _npy(text.numpy().astype(dtype)), "json": raw["json"], "txt": raw.get("txt", b"")}


def read_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a finished latent cache (no {MANIFEST}); build it with "
                                f"`cleanroom train cache SHARDS --config CONFIG --autoencoder MODEL --out {folder}`")
    return Manifest.model_validate_json(path.read_text())


def sources(folder: Path) -> list[str]:
    """The curated shards a cache was made from."""
    return [s.url for s in read_manifest(folder).sources]


@dataclass(frozen=True)
class Cache:
    folder: Path
    manifest: Manifest

    @property
    def shards(self) -> list[str]:
        return [str(self.folder / s.cache) for s in self.manifest.sources]


def _differing(what: str, built: Any, used: Any) -> list[str]:
    if built == used:
        return []
    return [f"{what}: the cache has {built}, this run {used}"]


def open_cache(config: TrainConfig, shards: list[str], vae_path: Path, vae: torch.nn.Module,
               encoder: models.ConditioningEncoder) -> Cache:
    """The cache of `data.cache`, after checking it fits this run: same encoders, same augmentation settings,
    made from exactly these shards, none changed since."""
    folder = Path(str(config.data.cache))
    manifest = read_manifest(folder)
    built = manifest.encoders
    conditioning = config.diffusion.conditioning
    check_cacheable(config)
    problems = (_differing("autoencoder", built.autoencoder, autoencoder_identity(vae_path, vae))
                + _differing("text encoder", built.text_encoder, text_identity(conditioning, encoder))
                + [f"data.{name}: the cache has {value!r}, this run {getattr(config.data, name)!r}"
                   for name, value in built.augment.model_dump().items()
                   if name != "seed" and getattr(config.data, name) != value])
    if problems:
        raise ConfigError(f"{folder}: built for another run ({'; '.join(problems)}); build a cache for this "
                          f"config or train without data.cache")
    recorded = {s.url: s for s in manifest.sources}
    if sorted(recorded) != sorted(shards):
        missing, extra = sorted(set(shards) - set(recorded)), sorted(set(recorded) - set(shards))
        raise ConfigError(f"{folder}: made from other shards than data.shards ({len(missing)} not in the cache, e.g. "
                          f"{missing[:1]}; {len(extra)} only in the cache, e.g. {extra[:1]})")
    for source in manifest.sources:
        size, sha256 = recorded_digest(source.url)
        if (size, sha256) != (source.bytes, source.sha256):
            raise ConfigError(f"{folder}: shard {source.url} changed since the cache was made ({source.bytes} bytes, "
                              f"sha256 {source.sha256[:12]}; now {size} bytes, {sha256[:12]}), e.g. by a revocation; "
                              f"build the cache again (only changed shards are re-encoded)")
    for shard in (folder / s.cache for s in manifest.sources):
        if not shard.is_file():
            raise FileNotFoundError(f"{shard}: listed in {folder / MANIFEST} but missing; build the cache again")
    return Cache(folder, manifest)


class Decoder:
    """Raw cache sample -> training sample: the stored distribution of epoch's view, text states, dropout."""

    def __init__(self, config: DataConfig, seed: int):
        self.config = config
        self.seed = seed

    def __call__(self, raw: dict[str, Any], epoch: int) -> dict[str, Any]:
        key = raw["__key__"]
        views = _load_npy(raw, LATENTS)
        states = _load_npy(raw, STATES)
        dropped = data.caption_dropped(self.seed, epoch, key, self.config.caption_dropout)
        return {"key": key, "latent_dist": torch.from_numpy(views[epoch % len(views)].astype(np.float32)),
                "states": torch.from_numpy(states.astype(np.float32)),
                "caption": "" if dropped else data.caption_of(raw), "dropped": dropped}
