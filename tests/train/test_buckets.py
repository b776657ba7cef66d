"""Aspect-ratio buckets inside the stream: which bucket a sample goes to, one bucket per batch, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train import data
from train.config import BucketConfig, DataConfig

from trained import MIXED_SIZES, tiny_config

BUCKETS = {"sizes": [[48, 32], [32, 48]], "step": 8}


def expected_bucket(key: str) -> tuple[int, int]:
    s, i = int(key[6]), int(key[7:])
    width, height = MIXED_SIZES[(s * 12 + i) % len(MIXED_SIZES)]
    return (48, 32) if width > height else (32, 48)


def stream(shards: Path, **start) -> data.ShardStream:
    config = DataConfig(batch_size=3, shuffle_buffer=6, crop="random", flip=True, buckets=BucketConfig(**BUCKETS))
    return data.ShardStream(data.expand_shards(str(shards)), config, seed=1, **start)


def test_buckets_for_a_pixel_budget_stay_within_it_and_samples_go_to_the_nearest_aspect():
    sizes = data.bucket_sizes(BucketConfig(pixels=512 * 512, step=64))
    assert (512, 512) in sizes and (384, 640) in sizes and (640, 384) in sizes
    assert all(w * h <= 512 * 512 and w % 64 == h % 64 == 0 and max(w / h, h / w) <= 2 for w, h in sizes)
    assert data.nearest_bucket(1000, 520, sizes) == (640, 384)
    assert data.nearest_bucket(300, 310, sizes) == (512, 512)
    with pytest.raises(ValueError, match="not both"):
        BucketConfig(sizes=[[64, 64]], pixels=4096)


def test_every_batch_holds_one_bucket_at_its_size(mixed: Path):
    iterator = iter(stream(mixed))
    taken = [next(iterator) for _ in range(12)]  # a bit over one epoch of 24
    assert {b["bucket"] for b in taken} == {(48, 32), (32, 48)}
    for batch in taken:
        width, height = batch["bucket"]
        assert batch["pixels"].shape == (3, 3, height, width)
        assert all(expected_bucket(key) == batch["bucket"] for key in batch["keys"])


def test_a_resumed_stream_refills_its_bucket_buffers_and_continues_with_the_same_batches(mixed: Path):
    iterator = iter(stream(mixed))
    straight = [next(iterator) for _ in range(14)]
    # Cut where a buffer holds a sample of the epoch before: the resumed slot must read it from that epoch.
    cut = next(i for i, b in enumerate(straight[:10]) if b["epoch"] == 1 and any(e == 0 for e, _ in b["pending"]))
    where = straight[cut]
    resumed = iter(stream(mixed, start={0: data.Position(where["epoch"], where["drawn"], where["pending"])},
                          first_batch=cut + 1))
    for expected in straight[cut + 1:]:
        got = next(resumed)
        assert got["keys"] == expected["keys"] and got["pending"] == expected["pending"]
        assert torch.equal(got["pixels"], expected["pixels"])


def test_diffusion_with_two_buckets_trains_one_bucket_per_batch_and_resumes_exactly(mixed: Path, tmp_path: Path,
                                                                                    straight_and_resumed,
                                                                                    random_autoencoder):
    config = tiny_config(mixed, data=tiny_config(mixed).data.model_dump() | {"buckets": BUCKETS, "batch_size": 3},
                         diffusion=tiny_config(mixed).diffusion.model_dump() | {
                             "autoencoder": str(random_autoencoder(0)),
                             "loop": {"steps": 4, "checkpoint_every": 2, "validate_every": 100, "log_every": 4}})
    # Killed after step 3: its checkpoint is step 2.
    summary, straight, resumed = straight_and_resumed(config, tmp_path, stop_at=3)
    assert all({expected_bucket(k) for k in keys} == {(shape[3], shape[2])} for keys, shape in straight)
    assert summary.last_logs["data/bucket/48x32"] + summary.last_logs["data/bucket/32x48"] == 12
    assert min(summary.last_logs["data/bucket/48x32"], summary.last_logs["data/bucket/32x48"]) > 0
    assert resumed == straight[2:]
