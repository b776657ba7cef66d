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
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import braceexpand
import fsspec
import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from train.config import DataConfig

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


def resize_and_crop(image: Image.Image, size: int, crop: str, rng: random.Random) -> Image.Image:
    """Shorter side to `size`, then a square crop (centred, or at a seeded random offset)."""
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.BICUBIC, reducing_gap=3.0)
    if crop == "center":
        left, top = (width - size) // 2, (height - size) // 2
    else:
        left, top = rng.randint(0, width - size), rng.randint(0, height - size)
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float CHW in [-1, 1], the range the autoencoder sees."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0)


class Decoder:
    """Raw sample -> training sample, or a `ValueError` naming what is wrong with it."""

    def __init__(self, config: DataConfig, seed: int):
        self.config = config
        self.seed = seed

    def __call__(self, raw: dict[str, Any], epoch: int) -> dict[str, Any]:
        key = raw["__key__"]
        image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in raw), None)
        if image_ext is None:
            raise ValueError(f"sample {key} in {raw.get('__url__')}: no image (looked for {IMAGE_EXTENSIONS})")
        # Per-sample choices depend on (seed, epoch, key) only: a replayed or resumed stream
        # makes the same crop, flip and dropout whatever was skipped before it.
        rng = random.Random(f"{self.seed}/{epoch}/{key}")
        try:
            image = Image.open(io.BytesIO(raw[image_ext]))
            image.load()
        except Exception as e:  # PIL raises many types for corrupt bytes
            raise ValueError(f"sample {key} in {raw.get('__url__')}: field {image_ext}: {e}") from e
        image = resize_and_crop(image.convert("RGB"), self.config.resolution, self.config.crop, rng)
        if self.config.flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        caption = raw["txt"].decode("utf-8").strip() if "txt" in raw else ""
        dropped = rng.random() < self.config.caption_dropout
        return {"key": key, "pixels": to_tensor(image), "caption": "" if dropped else caption, "dropped": dropped}


@dataclass
class Position:
    """How far one slot has read: `drawn` raw samples of epoch `epoch`'s shuffled stream."""

    epoch: int = 0
    drawn: int = 0


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixels": torch.stack([s["pixels"] for s in samples]),
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

    def slot(self) -> Slot:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        role = (worker + self.first_batch) % workers
        return Slot(self.rank * workers + role, self.world_size * workers)

    def raw_samples(self, slot: Slot, bad: BadSamples) -> Iterator[tuple[Position, dict[str, Any]]]:
        position = self.start.get(slot.index, Position())
        epoch, skip = position.epoch, position.drawn
        while True:
            rng = random.Random(f"{self.seed}/shuffle/{epoch}/{slot.index}")
            stream = (sample for url in shard_order(self.shards, self.seed, epoch, slot)
                      for sample in read_shard(url, bad))
            drawn = 0
            for sample in _shuffled(stream, self.config.shuffle_buffer, rng):
                drawn += 1
                if drawn > skip:
                    yield Position(epoch, drawn), sample
            if drawn == 0:
                raise RuntimeError(f"data slot {slot.index} read no samples in epoch {epoch} from "
                                   f"{len(self.shards)} shard(s), e.g. {self.shards[0]}")
            epoch, skip = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot = self.slot()
        bad = BadSamples(self.config.bad_sample_log_seconds)
        decode = Decoder(self.config, self.seed)
        batch: list[dict[str, Any]] = []
        reported = 0
        for position, raw in self.raw_samples(slot, bad):
            try:
                batch.append(decode(raw, position.epoch))
            except ValueError as e:
                bad(raw["__key__"], e)
                continue
            if len(batch) == self.config.batch_size:
                yield collate(batch) | {"slot": slot.index, "epoch": position.epoch, "drawn": position.drawn,
                                        "bad_samples": bad.count - reported}
                batch, reported = [], bad.count


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
    decode = Decoder(config.model_copy(update={"caption_dropout": 0.0, "flip": False, "crop": "center"}), seed)
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
