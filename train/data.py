"""Stream curated webdataset shards as training batches.

Each data *slot* (one per DataLoader worker of each process) reads its own share of the
shards, epoch after epoch: a per-epoch shard order drawn from the seed, split between slots,
a shuffle buffer seeded by (seed, epoch, slot), then decode, resize, crop and caption dropout.

Why this design rather than ``wds.WebDataset(..., resampled=True)``: exact resume. A
webdataset stream has no index, so the position we save is, per slot, the epoch and the
number of raw (undecoded) samples it has drawn from that epoch's shuffled stream. Every
random choice is a pure function of the seed, the epoch, the slot and the sample key, so a
resumed slot rebuilds the same shuffled stream and skips that many samples by reading tar
members only (no JPEG decode) before it goes on exactly where the interrupted run was. A
seeded resampling RNG would need its state and the shuffle buffer's contents saved, per
worker, from inside the worker processes.

DataLoader workers are visited round-robin, so which worker serves the next batch depends on
how many batches the loop has taken; a resumed stream rotates worker roles by that count
(`first_batch`) so that batch *n* comes from the same role as in an uninterrupted run.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import braceexpand
import fsspec
import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from train.config import BucketConfig, DataConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def expand_shards(location: str) -> list[str]:
    """Shard URLs from a file, a folder (its *.tar, sorted), a brace pattern or an fsspec URL."""
    urls: list[str] = []
    for pattern in braceexpand.braceexpand(location):
        fs, path = fsspec.core.url_to_fs(pattern)
        protocol = pattern.split("://", 1)[0] + "://" if "://" in pattern else ""
        if fs.isdir(path):
            found = sorted(fs.glob(path.rstrip("/") + "/*.tar"))
            if not found:
                raise FileNotFoundError(f"{pattern}: folder holds no *.tar shards")
            urls += [protocol + p if protocol and "://" not in p else p for p in found]
        elif fs.exists(path):
            urls.append(pattern)
        else:
            raise FileNotFoundError(f"{pattern}: shard not found (from data.shards {location!r})")
    return urls


@dataclass(frozen=True)
class Slot:
    """Where one stream sits among all of a run's streams."""

    index: int
    count: int


def shard_order(shards: list[str], seed: int, epoch: int, slot: Slot) -> list[str]:
    """The shards `slot` reads in `epoch`: its share of a seeded permutation.

    With fewer shards than slots a share would be empty, so each slot then reads every shard
    in its own order (webdataset's resampling gives the same duplication).
    """
    order = sorted(shards)
    random.Random(f"{seed}/shards/{epoch}").shuffle(order)
    if len(order) >= slot.count:
        return order[slot.index::slot.count]
    random.Random(f"{seed}/shards/{epoch}/{slot.index}").shuffle(order)
    return order


class BadSamples:
    """Counts bad samples and logs them, at most one line per interval."""

    def __init__(self, interval: float):
        self.interval = interval
        self.count = 0
        self._last = -float("inf")
        self._silenced = 0

    def __call__(self, where: str, error: BaseException) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            self._silenced += 1
            return
        extra = f" ({self._silenced} more since the last report)" if self._silenced else ""
        log.warning("skipping bad sample %s: %s: %s; %d bad so far%s", where, type(error).__name__, error,
                    self.count, extra)
        self._last, self._silenced = now, 0


def read_shard(url: str, bad: BadSamples) -> Iterator[dict[str, Any]]:
    """Raw samples (bytes per extension, plus __key__ and __url__) of one shard."""

    def handler(error: Exception) -> bool:
        bad(url, error)
        return True  # continue with the next member / shard

    try:
        with fsspec.open(url, "rb") as stream:
            members = tar_file_expander([{"url": url, "stream": stream}], handler=handler)
            yield from group_by_keys(members, handler=handler)
    except OSError as e:
        bad(url, e)


def _shuffled(samples: Iterator[dict[str, Any]], buffer: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """A shuffle buffer whose every draw comes from `rng`, so a replay draws the same order."""
    pool: list[dict[str, Any]] = []
    for sample in samples:
        pool.append(sample)
        if len(pool) >= buffer:
            k = rng.randrange(len(pool))
            pool[k], pool[-1] = pool[-1], pool[k]
            yield pool.pop()
    while pool:
        k = rng.randrange(len(pool))
        pool[k], pool[-1] = pool[-1], pool[k]
        yield pool.pop()


def resize_and_crop(image: Image.Image, size: int | tuple[int, int], crop: str, rng: random.Random) -> Image.Image:
    """Scaled to cover `size` (a side, or width and height), then cropped to it (centred, or at a seeded
    random offset)."""
    target_width, target_height = (size, size) if isinstance(size, int) else size
    scale = max(target_width / image.width, target_height / image.height)
    width = max(target_width, round(image.width * scale))
    height = max(target_height, round(image.height * scale))
    image = image.resize((width, height), Image.BICUBIC, reducing_gap=3.0)
    if crop == "center":
        left, top = (width - target_width) // 2, (height - target_height) // 2
    else:
        left, top = rng.randint(0, width - target_width), rng.randint(0, height - target_height)
    return image.crop((left, top, left + target_width, top + target_height))


def bucket_sizes(config: BucketConfig) -> list[tuple[int, int]]:
    """The buckets' (width, height), widest last: the configured ones, or for a pixel budget, per width
    (a multiple of `step`) the tallest height within the budget, as far as `max_aspect` allows."""
    if config.sizes is not None:
        found = {tuple(size) for size in config.sizes}
    else:
        found = set()
        for width in range(config.step, config.pixels // config.step + 1, config.step):
            height = config.pixels // width // config.step * config.step
            if height and max(width / height, height / width) <= config.max_aspect:
                found.add((width, height))
        if not found:
            raise ValueError(f"data.buckets: no bucket of step {config.step} within {config.pixels} pixels and "
                             f"aspect {config.max_aspect}")
    return sorted(found, key=lambda size: (size[0] / size[1], size))


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest (in log ratio, so 2:1 and 1:2 are as far from 1:1)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda size: (abs(math.log(size[0] / size[1]) - aspect), size))


def stored_size(raw: dict[str, Any], image_ext: str) -> tuple[int, int]:
    """A sample's image size without decoding it: its json's stored_width/stored_height, as curate writes
    them, else the image header."""
    key = raw["__key__"]
    if "json" in raw:
        try:
            meta = json.loads(raw["json"])
        except ValueError as e:
            raise ValueError(f"sample {key} in {raw.get('__url__')}: field json: {e}") from e
        width, height = meta.get("stored_width"), meta.get("stored_height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width, height
    try:
        return Image.open(io.BytesIO(raw[image_ext])).size  # reads the header only
    except Exception as e:  # PIL raises many types for corrupt bytes
        raise ValueError(f"sample {key} in {raw.get('__url__')}: field {image_ext}: {e}") from e


def image_field(raw: dict[str, Any]) -> str:
    """The extension under which a raw sample holds its image."""
    found = next((ext for ext in IMAGE_EXTENSIONS if ext in raw), None)
    if found is None:
        raise ValueError(f"sample {raw['__key__']} in {raw.get('__url__')}: no image (looked for {IMAGE_EXTENSIONS})")
    return found


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float CHW in [-1, 1], the range the autoencoder sees."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0)


def caption_dropped(seed: int, epoch: int, key: str, rate: float) -> bool:
    # A draw of its own, apart from the crop and flip: a run from a latent cache
    # (`train.cache`) drops the same captions as a run that decodes the images.
    return random.Random(f"{seed}/dropout/{epoch}/{key}").random() < rate


def caption_of(raw: dict[str, Any]) -> str:
    return raw["txt"].decode("utf-8").strip() if "txt" in raw else ""


class Decoder:
    """Raw sample -> training sample, or a `ValueError` naming what is wrong with it."""

    def __init__(self, config: DataConfig, seed: int):
        self.config = config
        self.seed = seed
        self.buckets = bucket_sizes(config.buckets) if config.buckets else None

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an image of this size trains at: its bucket's, or the square of `resolution`."""
        if self.buckets is None:
            return self.config.resolution, self.config.resolution
        return nearest_bucket(width, height, self.buckets)

    def size(self, raw: dict[str, Any]) -> tuple[int, int]:
        """The (width, height) this sample trains at (its image is read only for its size, if at all)."""
        if self.buckets is None:
            return self.config.resolution, self.config.resolution
        return self.fit(*stored_size(raw, image_field(raw)))

    def pixels(self, raw: dict[str, Any], epoch: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The sample's image as the stream of `epoch` crops and flips it (to `size`, else its own)."""
        key = raw["__key__"]
        image_ext = image_field(raw)
        size = size or self.size(raw)
        # Per-sample choices depend on (seed, epoch, key) only: a replayed or resumed stream
        # makes the same crop and flip whatever was skipped before it.
        rng = random.Random(f"{self.seed}/{epoch}/{key}")
        try:
            image = Image.open(io.BytesIO(raw[image_ext]))
            image.load()
        except Exception as e:  # PIL raises many types for corrupt bytes
            raise ValueError(f"sample {key} in {raw.get('__url__')}: field {image_ext}: {e}") from e
        image = resize_and_crop(image.convert("RGB"), size, self.config.crop, rng)
        if self.config.flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(image)

    def __call__(self, raw: dict[str, Any], epoch: int) -> dict[str, Any]:
        key = raw["__key__"]
        size = self.size(raw)
        pixels = self.pixels(raw, epoch, size)
        dropped = caption_dropped(self.seed, epoch, key, self.config.caption_dropout)
        return {"key": key, "pixels": pixels, "bucket": size, "caption": "" if dropped else caption_of(raw),
                "dropped": dropped}


@dataclass
class Position:
    """How far one slot has read: `drawn` raw samples of epoch `epoch`'s shuffled stream."""

    epoch: int = 0
    drawn: int = 0
    # (epoch, drawn) of each sample waiting in a bucket buffer then, in the order drawn: a resumed slot
    # reads them again, so its buffers hold what the interrupted run's held
    pending: list[list[int]] = field(default_factory=list)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: the samples' tensors stacked (pixels, or a cache's latent distributions and text states)."""
    tensors = {name: torch.stack([s[name] for s in samples])
               for name, value in samples[0].items() if isinstance(value, torch.Tensor)}
    return tensors | {
        "captions": [s["caption"] for s in samples],
        "keys": [s["key"] for s in samples],
        "dropped": torch.tensor([s["dropped"] for s in samples]),
    }


@dataclass
class ShardStream(IterableDataset):
    """An endless stream of batches for one training process (split further by worker)."""

    shards: list[str]
    config: DataConfig
    seed: int
    rank: int = 0
    world_size: int = 1
    start: dict[int, Position] = field(default_factory=dict)  # slot index -> where to resume
    first_batch: int = 0  # batches this process has already taken (rotates worker roles)
    decoder: Callable[[DataConfig, int], Callable[[dict[str, Any], int], dict[str, Any]]] = Decoder

    def slot(self) -> Slot:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        role = (worker + self.first_batch) % workers
        return Slot(self.rank * workers + role, self.world_size * workers)

    def epoch_samples(self, slot: Slot, epoch: int, bad: BadSamples) -> Iterator[dict[str, Any]]:
        """The raw samples `slot` draws in `epoch`, in its shuffled order."""
        rng = random.Random(f"{self.seed}/shuffle/{epoch}/{slot.index}")
        stream = (sample for url in shard_order(self.shards, self.seed, epoch, slot)
                  for sample in read_shard(url, bad))
        return _shuffled(stream, self.config.shuffle_buffer, rng)

    def raw_samples(self, slot: Slot, bad: BadSamples) -> Iterator[tuple[Position, dict[str, Any]]]:
        position = self.start.get(slot.index, Position())
        epoch, skip = position.epoch, position.drawn
        while True:
            drawn = 0
            for sample in self.epoch_samples(slot, epoch, bad):
                drawn += 1
                if drawn > skip:
                    yield Position(epoch, drawn), sample
            if drawn == 0:
                raise RuntimeError(f"data slot {slot.index} read no samples in epoch {epoch} from "
                                   f"{len(self.shards)} shard(s), e.g. {self.shards[0]}")
            epoch, skip = epoch + 1, 0

    def pending_samples(self, slot: Slot) -> Iterator[tuple[tuple[int, int], dict[str, Any]]]:
        """The raw samples that waited in the bucket buffers at the resume position, read again by replaying
        their epochs' streams up to them (tar members only; their bad samples were counted the first time)."""
        wanted = [tuple(entry) for entry in self.start.get(slot.index, Position()).pending]
        quiet = BadSamples(float("inf"))
        for epoch in sorted({e for e, _ in wanted}):
            indices = {d for e, d in wanted if e == epoch}
            for drawn, sample in enumerate(self.epoch_samples(slot, epoch, quiet), start=1):
                if drawn in indices:
                    yield (epoch, drawn), sample
                if drawn == max(indices):
                    break

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot = self.slot()
        bad = BadSamples(self.config.bad_sample_log_seconds)
        decode = self.decoder(self.config, self.seed)
        buffers = BucketBuffers(self.config.batch_size)
        start = self.start.get(slot.index, Position())
        reported = 0

        def batch(samples: list[dict[str, Any]], position: Position) -> dict[str, Any]:
            return collate(samples) | {"slot": slot.index, "epoch": position.epoch, "drawn": position.drawn,
                                       "pending": buffers.pending(), "bucket": bucket_of(samples[0]),
                                       "bad_samples": bad.count - reported}

        waiting = ((Position(epoch, drawn), raw) for (epoch, drawn), raw in self.pending_samples(slot))
        for position, raw in itertools.chain(waiting, self.raw_samples(slot, bad)):
            try:
                sample = decode(raw, position.epoch)
            except ValueError as e:
                bad(raw["__key__"], e)
                continue
            full = buffers.add(sample, position.epoch, position.drawn)
            # A waiting sample fills a buffer only when batches got smaller since (a new phase); the batch
            # then stands at the position the stream resumed from.
            if full is not None:
                yield batch(full, max(position, start, key=lambda p: (p.epoch, p.drawn)))
                reported = bad.count


def bucket_of(sample: dict[str, Any]) -> tuple[int, int]:
    """(width, height) in pixels that a decoded sample trains at: its bucket (also for cached latents)."""
    return sample["bucket"]


class BucketBuffers:
    """One buffer of decoded samples per bucket; a buffer that reaches a batch is handed out whole."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.buffers: dict[tuple[int, int], list[tuple[int, int, dict[str, Any]]]] = {}

    def add(self, sample: dict[str, Any], epoch: int, drawn: int) -> list[dict[str, Any]] | None:
        buffer = self.buffers.setdefault(bucket_of(sample), [])
        buffer.append((epoch, drawn, sample))
        if len(buffer) < self.batch_size:
            return None
        del self.buffers[bucket_of(sample)]
        return [entry[2] for entry in buffer]

    def pending(self) -> list[list[int]]:
        """(epoch, drawn) of every waiting sample, in the order drawn."""
        return sorted([epoch, drawn] for buffer in self.buffers.values() for epoch, drawn, _ in buffer)


def loader(stream: ShardStream, workers: int) -> torch.utils.data.DataLoader:
    # Its own generator: a DataLoader draws worker seeds from torch's global RNG, which would
    # shift the training noise of a resumed run by one draw.
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                       generator=torch.Generator().manual_seed(stream.seed),
                                       persistent_workers=workers > 0)


def first_samples(shards: list[str], config: DataConfig, seed: int, count: int) -> dict[str, Any]:
    """Up to `count` samples from the start of the sorted shards, centred, uncropped captions.

    A fixed set, the same on every call and every process: validation references and the
    latent statistics for the autoencoder's scaling factor.
    """
    fixed = {"caption_dropout": 0.0, "flip": False, "crop": "center", "buckets": None}  # square, to stack
    decode = Decoder(config.model_copy(update=fixed), seed)
    bad = BadSamples(config.bad_sample_log_seconds)
    samples: list[dict[str, Any]] = []
    for url in sorted(shards):
        for raw in read_shard(url, bad):
            try:
                samples.append(decode(raw, 0))
            except ValueError as e:
                bad(raw["__key__"], e)
                continue
            if len(samples) == count:
                return collate(samples)
    if not samples:
        raise RuntimeError(f"no readable samples in {len(shards)} shard(s), e.g. {shards[0]}")
    return collate(samples)
