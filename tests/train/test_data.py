from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch

from train import data
from train.config import DataConfig

from trained import CORRUPT_KEY, write_shards


def batches(stream: data.ShardStream, count: int) -> list[dict]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(count)]


def test_expand_shards_accepts_folder_brace_pattern_and_file(shards: Path):
    files = sorted(str(p) for p in shards.glob("*.tar"))
    assert data.expand_shards(str(shards)) == files
    assert data.expand_shards(str(shards / "shard-{00000..00001}.tar")) == files[:2]
    assert data.expand_shards(files[2]) == files[2:]
    assert data.expand_shards(f"file://{shards}/shard-00001.tar") == [f"file://{shards}/shard-00001.tar"]


def test_expand_shards_names_what_is_missing(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="shard-00009.tar"):
        data.expand_shards(str(tmp_path / "shard-00009.tar"))
    with pytest.raises(FileNotFoundError, match="no \\*.tar"):
        data.expand_shards(str(tmp_path))


def test_shard_order_splits_each_epoch_between_slots_and_reshuffles():
    shards = [f"s{i}" for i in range(8)]
    shares = [data.shard_order(shards, 0, 0, data.Slot(i, 4)) for i in range(4)]
    assert sorted(s for share in shares for s in share) == shards
    assert all(len(share) == 2 for share in shares)
    orders = {tuple(data.shard_order(shards, 0, epoch, data.Slot(0, 1))) for epoch in range(5)}
    assert len(orders) > 1
    assert data.shard_order(shards[:2], 0, 0, data.Slot(3, 4)) != []  # fewer shards than slots: all of them


def test_stream_decodes_batches_at_training_size(shards: Path):
    config = DataConfig(resolution=32, batch_size=4, shuffle_buffer=8)
    batch = batches(data.ShardStream(data.expand_shards(str(shards)), config, seed=0), 1)[0]
    assert batch["pixels"].shape == (4, 3, 32, 32)
    assert batch["pixels"].min() >= -1 and batch["pixels"].max() <= 1
    assert len(batch["captions"]) == len(batch["keys"]) == 4
    assert batch["slot"] == 0 and batch["epoch"] == 0


def test_stream_is_deterministic_and_reshuffled_per_epoch(shards: Path):
    config = DataConfig(resolution=32, batch_size=4, shuffle_buffer=8, caption_dropout=0.0)
    urls = data.expand_shards(str(shards))
    first = [b["keys"] for b in batches(data.ShardStream(urls, config, seed=0), 18)]  # 2 epochs of 36
    again = [b["keys"] for b in batches(data.ShardStream(urls, config, seed=0), 18)]
    assert first == again
    epoch0, epoch1 = sum(first[:9], []), sum(first[9:], [])
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1


def test_resumed_stream_continues_with_the_same_batches(shards: Path):
    config = DataConfig(resolution=32, batch_size=4, shuffle_buffer=8, crop="random", flip=True)
    urls = data.expand_shards(str(shards))
    straight = batches(data.ShardStream(urls, config, seed=3), 14)
    where = straight[10]  # resume after 11 batches, in the second epoch
    resumed = batches(data.ShardStream(urls, config, seed=3, start={0: data.Position(where["epoch"], where["drawn"])},
                                       first_batch=11), 3)
    for expected, got in zip(straight[11:], resumed):
        assert got["keys"] == expected["keys"]
        assert got["captions"] == expected["captions"]
        assert torch.equal(got["pixels"], expected["pixels"])


def test_resume_with_two_workers_keeps_the_batch_order(shards: Path):
    config = DataConfig(resolution=32, batch_size=4, shuffle_buffer=8, workers=2)
    urls = data.expand_shards(str(shards))

    def run(stream: data.ShardStream, count: int) -> list[dict]:
        iterator = iter(data.loader(stream, workers=2))
        return [next(iterator) for _ in range(count)]

    straight = run(data.ShardStream(urls, config, seed=0), 8)
    taken = straight[:5]  # an odd count: the next batch comes from the other worker
    start = {b["slot"]: data.Position(b["epoch"], b["drawn"]) for b in taken}
    resumed = run(data.ShardStream(urls, config, seed=0, start=start, first_batch=5), 3)
    assert {b["slot"] for b in straight} == {0, 1}
    assert [b["keys"] for b in resumed] == [b["keys"] for b in straight[5:]]


@pytest.mark.parametrize("interval, lines", [(3600.0, 1), (0.0, 2)])
def test_bad_samples_are_counted_skipped_and_logged_rate_limited(tmp_path: Path, caplog, interval, lines):
    write_shards(tmp_path, shards=1, per_shard=7, corrupt=True)
    (tmp_path / "shard-00001.tar").write_bytes(b"this is not a tar file at all" * 20)
    config = DataConfig(resolution=32, batch_size=7, shuffle_buffer=1, bad_sample_log_seconds=interval)
    stream = data.ShardStream(data.expand_shards(str(tmp_path)), config, seed=0)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        batch = batches(stream, 1)[0]
    assert CORRUPT_KEY not in batch["keys"] and len(batch["keys"]) == 7
    assert batch["bad_samples"] == 2  # the undecodable image and the unreadable shard
    assert len([r for r in caplog.records if "bad sample" in r.getMessage()]) == lines
    if lines == 2:
        assert CORRUPT_KEY in caplog.text and "shard-00001.tar" in caplog.text


def test_caption_dropout_rate_on_real_batches(shards: Path):
    config = DataConfig(resolution=32, batch_size=6, shuffle_buffer=8, caption_dropout=0.3)
    stream = data.ShardStream(data.expand_shards(str(shards)), config, seed=1)
    taken = batches(stream, 60)  # 360 samples, 10 epochs of the 36
    dropped = torch.cat([b["dropped"] for b in taken])
    captions = [c for b in taken for c in b["captions"]]
    keys = [k for b in taken for k in b["keys"]]
    assert abs(dropped.float().mean().item() - 0.3) < 0.06  # 3 standard errors at n=360
    assert all((c == "") == bool(d) for c, d in zip(captions, dropped))
    assert all(c == f"caption of {k}" for c, k, d in zip(captions, keys, dropped) if not d)


def test_no_caption_dropout_by_config(shards: Path):
    config = DataConfig(resolution=32, batch_size=6, shuffle_buffer=8, caption_dropout=0.0)
    taken = batches(data.ShardStream(data.expand_shards(str(shards)), config, seed=1), 6)
    assert not any(b["dropped"].any() for b in taken)


def test_resize_and_crop_covers_the_square():
    from PIL import Image

    image = Image.new("RGB", (90, 45), "red")
    for crop in ("center", "random"):
        out = data.resize_and_crop(image, 32, crop, random.Random(0))
        assert out.size == (32, 32)


def test_first_samples_are_fixed_and_uncropped_by_dropout(shards: Path):
    config = DataConfig(resolution=32, caption_dropout=1.0, crop="random")
    urls = data.expand_shards(str(shards))
    a, b = data.first_samples(urls, config, 0, 5), data.first_samples(urls, config, 0, 5)
    assert a["keys"] == b["keys"] == [f"test-00{i:03d}" for i in range(5)]
    assert all(c.startswith("caption of") for c in a["captions"])
    assert torch.equal(a["pixels"], b["pixels"])
