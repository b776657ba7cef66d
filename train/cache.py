"""Latent caches: the frozen autoencoder and text encoder run once per sample instead of once per step.

``cleanroom train cache SHARDS --config CONFIG --autoencoder MODEL --out CACHE`` writes, per curated
shard, one cache shard (webdataset) whose samples keep the source's key and carry:

    KEY.latents.WxH.npy  per size the sample trains at in the run (the square of `data.resolution`, or
                         its aspect bucket, in each phase of the schedule), the autoencoder's latent
                         distribution (mean and log-variance, DiagonalGaussian parameters) of `variants`
                         augmented views, (variants, 2 x channels, H / f, W / f): view v is the crop
                         and flip the on-the-fly stream makes at that size in epoch v
    KEY.size.json     in a cache for a run with buckets: the image's stored width and height (from
                      its json, else its header), which pick its bucket
    KEY.states.npy    the text encoder's states of the caption, (tokens, width)
    KEY.json          the source sample's provenance json, byte for byte (license fields included)
    KEY.txt           its caption

and ``CACHE/cache.json`` last: the job's settings, which autoencoder and text encoder made it (name and
weights sha256) and, per source shard, its URL, size and sha256, the samples cached and the samples left
out with their reasons. The diffusion job reads a cache with ``data.cache`` (or ``--cache``): it draws
latents from the stored distributions with its own seeded generator, so sampling stays stochastic, and
refuses a cache made by other encoders, without a size or bucket set the run trains at, or from shards
that have changed since (a revocation rewrites shards: building again re-encodes only the shards that
changed).
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
from pydantic import Field, ValidationError

from curate.config import ConfigError
from curate.io import atomic_path, write_text_atomic
from curate.shards import INDEX
from train import data, models
from train.config import ConditioningConfig, DataConfig, Strict, TrainConfig, phase_data

log = logging.getLogger(__name__)

MANIFEST = "cache.json"
STATES, SIZE = "states.npy", "size.json"
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


def latents_field(size: tuple[int, int]) -> str:
    return f"latents.{size[0]}x{size[1]}.npy"


class Augment(Strict):
    """The training settings that shape a cached view; a run with other values cannot use the cache."""

    crop: Literal["center", "random"]
    flip: bool
    seed: int

    @classmethod
    def of(cls, config: TrainConfig) -> "Augment":
        return cls(crop=config.data.crop, flip=config.data.flip, seed=config.seed)


class Geometry(Strict):
    """What one data setting trains at: square crops of `resolution`, or these aspect buckets."""

    resolution: int | None = None
    buckets: list[tuple[int, int]] | None = None

    @classmethod
    def of(cls, settings: DataConfig) -> "Geometry":
        if settings.buckets is not None:
            return cls(buckets=data.bucket_sizes(settings.buckets))
        return cls(resolution=settings.resolution)

    def __str__(self) -> str:
        if self.buckets is None:
            return f"{self.resolution} px squares"
        return "buckets " + ", ".join(f"{w}x{h}" for w, h in self.buckets)


def run_settings(config: TrainConfig) -> list[tuple[str, DataConfig]]:
    """Where each data setting the diffusion job trains with is configured, and the setting: `data`, or
    each phase of the schedule."""
    phases = config.diffusion.phases
    if not phases:
        return [("data", config.data)]
    return [(f"diffusion.phases[{i}]", phase_data(config.data, phase)) for i, phase in enumerate(phases)]


def run_geometries(config: TrainConfig) -> list[Geometry]:
    """Every geometry of the run, each once, in schedule order."""
    found: list[Geometry] = []
    for geometry in (Geometry.of(settings) for _, settings in run_settings(config)):
        if geometry not in found:
            found.append(geometry)
    return found


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
    geometries: list[Geometry]  # the sizes cached: a run may train at any of them
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
class Pending:
    """A sample read for the cache: its raw fields, stored (width, height), and its views per size."""

    raw: dict[str, Any]
    stored: tuple[int, int] | None  # read only when the run has buckets
    views: dict[tuple[int, int], torch.Tensor]


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
        self.encoders = Encoders(augment=Augment.of(self.config), geometries=run_geometries(self.config),
                                 autoencoder=autoencoder_identity(Path(self.job.autoencoder), self.vae),
                                 text_encoder=text_identity(conditioning, self.encoder),
                                 conditioning=conditioning, variants=self.job.variants, precision=self.job.precision)
        # One per geometry, to find a sample's size in each; every size's views come out the same from any of
        # them (a view depends on the size, crop, flip, seed, epoch and key only).
        self.decoders = [data.Decoder(settings, self.config.seed) for _, settings in run_settings(self.config)]

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

    def _batches(self, url: str, bad: _Collected) -> Iterator[list[Pending]]:
        batch: list[Pending] = []
        for raw in data.read_shard(url, bad):
            try:
                batch.append(self._views(raw))
            except ValueError as e:
                bad(raw["__key__"], e)
                continue
            if len(batch) == self.job.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _views(self, raw: dict[str, Any]) -> Pending:
        if "json" not in raw:
            raise ValueError(f"sample {raw['__key__']} in {raw.get('__url__')}: no json provenance; a cached sample "
                             f"carries its license record")
        # Only a bucketed run reads the stored size (its json or image header), as the image stream does.
        bucketed = any(decoder.buckets for decoder in self.decoders)
        stored = data.stored_size(raw, data.image_field(raw)) if bucketed else None
        sizes = list(dict.fromkeys(decoder.fit(*stored) if stored else decoder.size(raw) for decoder in self.decoders))
        decoder = self.decoders[0]
        views = {size: torch.stack([decoder.pixels(raw, view, size) for view in range(self.job.variants)])
                 for size in sizes}
        return Pending(raw, stored, views)

    @torch.no_grad()
    def _encode(self, batch: list[Pending]) -> Iterator[dict[str, Any]]:
        dtype = DTYPES[self.job.precision]
        distributions = self._distributions(batch)
        states = self.encoder([data.caption_of(p.raw) for p in batch], None, None).float().cpu()
        for number, (pending, text) in enumerate(zip(batch, states)):
            latents = {latents_field(size): _npy(distributions[number, size].numpy().astype(dtype))
                       for size in pending.views}
            if pending.stored is not None:
                latents[SIZE] = json.dumps({"width": pending.stored[0], "height": pending.stored[1]}).encode()
            yield {"__key__": pending.raw["__key__"], **latents, STATES: _npy(text.numpy().astype(dtype)),
                   "json": pending.raw["json"], "txt": pending.raw.get("txt", b"")}

    def _distributions(self, batch: list[Pending]) -> dict[tuple[int, tuple[int, int]], torch.Tensor]:
        """(sample number, size) -> the latent distributions of its views at that size, the views of one size
        encoded together, at most a batch of samples' worth at once."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for number, pending in enumerate(batch):
            for size in pending.views:
                by_size.setdefault(size, []).append(number)
        found = {}
        for size, numbers in by_size.items():
            pixels = torch.cat([batch[n].views[size] for n in numbers])
            encoded = torch.cat([self.vae.encode(chunk.to(self.device)).latent_dist.parameters.float().cpu()
                                 for chunk in pixels.split(self.job.batch_size * self.job.variants)])
            found |= {(n, size): views for n, views in zip(numbers, encoded.split(self.job.variants))}
        return found


def read_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a finished latent cache (no {MANIFEST}); build it with "
                                f"`cleanroom train cache SHARDS --config CONFIG --autoencoder MODEL --out {folder}`")
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValidationError as e:
        raise ConfigError(f"{path}: not a cache manifest this version reads ({e.error_count()} problems, first: "
                          f"{'.'.join(map(str, e.errors()[0]['loc']))}: {e.errors()[0]['msg']}); build the cache "
                          f"again") from e


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


def _differing_augment(built: Augment, config: TrainConfig) -> list[str]:
    """The crop and flip settings, and the seed when it draws them (random crops or flips)."""
    used = Augment.of(config)
    problems = [f"data.{name}: the cache has {getattr(built, name)!r}, this run {getattr(used, name)!r}"
                for name in ("crop", "flip") if getattr(built, name) != getattr(used, name)]
    if (used.crop == "random" or used.flip) and built.seed != used.seed:
        problems.append(f"seed: the cache's random crops and flips were drawn with seed {built.seed}, this run's "
                        f"with {used.seed}")
    return problems


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
                + _differing_augment(built.augment, config)
                + [f"{where}: {Geometry.of(settings)} not cached" for where, settings in run_settings(config)
                   if Geometry.of(settings) not in built.geometries])
    if problems:
        cached = "; ".join(map(str, built.geometries))
        raise ConfigError(f"{folder}: built for another run ({'; '.join(problems)}; the cache holds {cached}); "
                          f"build a cache for this config or train without data.cache")
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
    """Raw cache sample -> training sample: the stored distribution of epoch's view at the size the sample
    trains at with these data settings (its bucket's, from its stored size), text states, dropout."""

    def __init__(self, config: DataConfig, seed: int):
        self.config = config
        self.seed = seed
        self.sizes = data.Decoder(config, seed)

    def size(self, raw: dict[str, Any]) -> tuple[int, int]:
        if self.config.buckets is None:
            return self.config.resolution, self.config.resolution
        where = f"cache sample {raw['__key__']} in {raw.get('__url__')}: field {SIZE}"
        if SIZE not in raw:
            raise ValueError(f"{where}: missing")
        try:
            stored = json.loads(raw[SIZE])
            width, height = int(stored["width"]), int(stored["height"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: {e!r}") from e
        if width <= 0 or height <= 0:
            raise ValueError(f"{where}: {width}x{height} is not an image size")
        return self.sizes.fit(width, height)

    def __call__(self, raw: dict[str, Any], epoch: int) -> dict[str, Any]:
        key = raw["__key__"]
        size = self.size(raw)
        views = _load_npy(raw, latents_field(size))
        states = _load_npy(raw, STATES)
        dropped = data.caption_dropped(self.seed, epoch, key, self.config.caption_dropout)
        return {"key": key, "latent_dist": torch.from_numpy(views[epoch % len(views)].astype(np.float32)),
                "bucket": size, "states": torch.from_numpy(states.astype(np.float32)),
                "caption": "" if dropped else data.caption_of(raw), "dropped": dropped}
