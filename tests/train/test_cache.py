"""Latent caches: what a cache shard holds, training from it as from the shards, and what it refuses."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.cli import main
from curate.config import ConfigError
from train import cache, data, models
from train.config import BucketConfig, Phase
from train.loop import Run, train

from trained import CORRUPT_KEY, MIXED_SIZES, tiny_config, write_shards

VARIANTS = 2


@pytest.fixture(scope="module")
def vae_folder(random_autoencoder) -> Path:
    return random_autoencoder(0)


def config_for(shards: Path, vae: Path, cache_folder: Path | None = None, **loop):
    loop = {"steps": 4, "checkpoint_every": 2, "keep_checkpoints": 5, "validate_every": 100, "log_every": 1} | loop
    return tiny_config(shards, data=tiny_config(shards).data.model_dump() | {
        "cache": str(cache_folder) if cache_folder else None},
        diffusion=tiny_config(shards).diffusion.model_dump() | {"autoencoder": str(vae), "loop": loop})


def build(shards: Path, vae: Path, out: Path, precision: str = "fp32", **changes) -> cache.Manifest:
    job = cache.CacheJob(shards=str(shards), autoencoder=str(vae), variants=VARIANTS, precision=precision,
                         batch_size=5)
    return cache.Builder(config_for(shards, vae, **changes), job, torch.device("cpu")).build(out)


@pytest.fixture(scope="module")
def built(shards: Path, vae_folder: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache")
    build(shards, vae_folder, out)
    return out


def members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def test_cache_shards_keep_keys_and_provenance_and_hold_each_views_distribution(built: Path, shards: Path,
                                                                                 vae_folder: Path):
    manifest = cache.read_manifest(built)
    assert [Path(s.url).name for s in manifest.sources] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    first = manifest.sources[0]
    assert first.sha256 == hashlib.sha256(Path(first.url).read_bytes()).hexdigest() and first.samples == 12
    source, cached = members(Path(first.url)), members(built / first.cache)
    keys = sorted({name.split(".", 1)[0] for name in source})
    assert sorted({name.split(".", 1)[0] for name in cached}) == keys
    key = keys[0]
    assert cached[f"{key}.json"] == source[f"{key}.json"] and json.loads(cached[f"{key}.json"])["license"] == "CC0-1.0"
    assert cached[f"{key}.txt"] == source[f"{key}.txt"]
    assert {name.split(".", 1)[1] for name in cached if name.startswith(key)} == {
        "latents.32x32.npy", "states.npy", "json", "txt"}  # a square run needs no stored size
    views = np.load(io.BytesIO(cached[f"{key}.latents.32x32.npy"]))
    states = np.load(io.BytesIO(cached[f"{key}.states.npy"]))
    assert views.shape == (VARIANTS, 8, 8, 8) and states.shape == (77, 32)  # mean and log-variance of 4 channels

    # View v is the crop and flip that the image stream makes in epoch v.
    config = config_for(shards, vae_folder)
    decoder = data.Decoder(config.data, config.seed)
    raw = {"__key__": key, "jpg": source[f"{key}.jpg"]}
    vae = models.load_autoencoder(vae_folder, "cpu")
    with torch.no_grad():
        for view in range(VARIANTS):
            expected = vae.encode(decoder.pixels(raw, view)[None]).latent_dist.parameters[0]
            assert torch.allclose(torch.from_numpy(views[view]), expected, atol=1e-5)
    assert not np.allclose(views[0], views[1])


def test_training_from_the_cache_sees_what_encoding_on_the_fly_sees(built: Path, shards: Path, vae_folder: Path,
                                                                     tmp_path: Path):
    seen: dict[str, list] = {"fly": [], "cache": []}
    runs = {}
    for name, folder in (("fly", None), ("cache", built)):
        runs[name] = train("diffusion", config_for(shards, vae_folder, folder), tmp_path / name,
                           on_batch=lambda b, n=name: seen[n].append((b["keys"], b["dropped"].tolist())))
    assert seen["cache"] == seen["fly"]  # the same samples, the same captions dropped
    assert runs["cache"].last_logs["train/loss"] == pytest.approx(runs["fly"].last_logs["train/loss"], rel=1e-3)
    record = json.loads((tmp_path / "cache" / "diffusion" / "final" / "training.json").read_text())
    assert record["shards"] == data.expand_shards(str(shards))  # the curated shards, for the audit
    assert record["cache"]["folder"] == str(built) and record["cache"]["variants"] == VARIANTS


def test_resume_from_the_cache_continues_exactly(built: Path, shards: Path, vae_folder: Path, tmp_path: Path,
                                                 straight_and_resumed):
    config = config_for(shards, vae_folder, built, steps=5)
    config = config.model_copy(update={"data": config.data.model_copy(update={"shards": None})})  # from the cache
    _, straight, resumed = straight_and_resumed(config, tmp_path, stop_at=3, record=lambda b: b["keys"])
    assert resumed == straight[2:]


def test_a_cache_of_other_encoders_or_settings_is_refused_by_name(built: Path, shards: Path, vae_folder: Path,
                                                                   tmp_path: Path, random_autoencoder):
    other = random_autoencoder(1)
    with pytest.raises(ConfigError, match=f"autoencoder: the cache has name='{vae_folder}'"):
        Run("diffusion", config_for(shards, other, built), tmp_path / "a", resume=False)
    reseeded = config_for(shards, vae_folder, built).model_copy(update={"seed": 5})
    with pytest.raises(ConfigError, match="text encoder: the cache has name='open_clip cleanroom-tiny-text"):
        Run("diffusion", reseeded, tmp_path / "b", resume=False)
    with pytest.raises(ConfigError, match="seed: the cache's random crops and flips were drawn with seed 0, this "
                                          "run's with 5"):
        Run("diffusion", reseeded, tmp_path / "b", resume=False)
    small = config_for(shards, vae_folder, built)
    small = small.model_copy(update={"data": small.data.model_copy(update={"resolution": 16})})
    with pytest.raises(ConfigError, match=r"data: 16 px squares not cached; the cache holds 32 px squares\)"):
        Run("diffusion", small, tmp_path / "c", resume=False)
    with pytest.raises(ConfigError, match="made from other shards"):
        Run("diffusion", config_for(shards / "shard-00000.tar", vae_folder, built), tmp_path / "d", resume=False)


def test_a_changed_shard_is_refused_and_a_rebuild_reencodes_only_it(shards: Path, vae_folder: Path, tmp_path: Path):
    copied = tmp_path / "shards"
    shutil.copytree(shards, copied)
    out = tmp_path / "cache"
    build(copied, vae_folder, out, precision="fp16")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    write_shards(tmp_path / "revoked", shards=1, per_shard=11)  # shard-00000 as a revocation leaves it: one less
    shutil.copy(tmp_path / "revoked" / "shard-00000.tar", copied / "shard-00000.tar")
    with pytest.raises(ConfigError, match="shard-00000.tar changed since the cache was made"):
        Run("diffusion", config_for(copied, vae_folder, out), tmp_path / "run", resume=False)

    manifest = build(copied, vae_folder, out, precision="fp16")
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert [s.samples for s in manifest.sources] == [11, 12, 12]
    assert [name for name in before if before[name] != after[name]] == ["00000-shard-00000.tar"]
    assert Run("diffusion", config_for(copied, vae_folder, out), tmp_path / "run", resume=False).task.cache


def test_unreadable_samples_are_left_out_with_their_reason(vae_folder: Path, tmp_path: Path):
    write_shards(tmp_path / "shards", shards=1, per_shard=3, corrupt=True)
    with tarfile.open(tmp_path / "shards" / "shard-00000.tar", "a") as archive:  # an image with no provenance
        member = tarfile.TarInfo("orphan-0001.jpg")
        jpeg = members(tmp_path / "shards" / "shard-00000.tar")["test-00000.jpg"]
        member.size = len(jpeg)
        archive.addfile(member, io.BytesIO(jpeg))
    manifest = build(tmp_path / "shards", vae_folder, tmp_path / "cache")
    left_out = {entry.where: entry.reason for entry in manifest.sources[0].left_out}
    assert manifest.sources[0].samples == 3
    assert set(left_out) == {CORRUPT_KEY, "orphan-0001"} and "no json provenance" in left_out["orphan-0001"]


def test_cache_and_train_from_the_command_line(shards: Path, vae_folder: Path, tmp_path: Path, capsys):
    import yaml

    config = config_for(shards, vae_folder, steps=2).model_dump(mode="json")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["train", "cache", str(shards), "--config", str(path), "--autoencoder", str(vae_folder),
            "--out", str(tmp_path / "cache"), "--variants", "1"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["shards"], printed["samples"], printed["left_out"]) == (3, 36, 0)
    assert main(["train", "diffusion", str(path), "--cache", str(tmp_path / "cache"), "--out",
                 str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert main(["train", "diffusion", str(path), "--cache", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "out2")]) == 2
    assert "not a finished latent cache" in capsys.readouterr().err


BUCKETS = {"sizes": [[48, 32], [32, 48]], "step": 8}
SCHEDULE = [{"steps": 2, "resolution": 32}, {"steps": 4, "buckets": BUCKETS, "batch_size": 3}]


def scheduled(shards: Path, vae: Path, cache_folder: Path | None = None, phases=SCHEDULE):
    config = config_for(shards, vae, cache_folder, steps=sum(p["steps"] for p in phases))
    return config.model_copy(update={"diffusion": config.diffusion.model_copy(update={
        "phases": [Phase(**p) for p in phases]})})


@pytest.fixture(scope="module")
def bucketed(mixed: Path, vae_folder: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bucketed-cache")
    job = cache.CacheJob(shards=str(mixed), autoencoder=str(vae_folder), variants=VARIANTS, precision="fp32",
                         batch_size=4)
    cache.Builder(scheduled(mixed, vae_folder), job, torch.device("cpu")).build(out)
    return out


def test_a_cache_for_a_schedule_holds_each_samples_views_at_every_size_it_trains_at(bucketed: Path, mixed: Path,
                                                                                     vae_folder: Path):
    manifest = cache.read_manifest(bucketed)
    assert [str(g) for g in manifest.encoders.geometries] == ["32 px squares", "buckets 32x48, 48x32"]
    source, cached = members(mixed / "shard-00000.tar"), members(bucketed / manifest.sources[0].cache)
    vae = models.load_autoencoder(vae_folder, "cpu")
    bucketing = scheduled(mixed, vae_folder).data.model_copy(update={"buckets": BucketConfig(**BUCKETS)})
    decoder = data.Decoder(bucketing, 0)
    for key in ("mixed-000", "mixed-001"):  # wide without sizes in its json (read from the header), then tall
        raw = {"__key__": key, "jpg": source[f"{key}.jpg"], "json": source[f"{key}.json"]}
        bucket = (48, 32) if key == "mixed-000" else (32, 48)
        assert sorted(n for n in cached if n.startswith(f"{key}.latents")) == sorted(
            {f"{key}.latents.32x32.npy", f"{key}.latents.{bucket[0]}x{bucket[1]}.npy"})
        stored = MIXED_SIZES[0] if key == "mixed-000" else MIXED_SIZES[1]
        assert json.loads(cached[f"{key}.size.json"]) == {"width": stored[0], "height": stored[1]}
        views = np.load(io.BytesIO(cached[f"{key}.latents.{bucket[0]}x{bucket[1]}.npy"]))
        assert views.shape == (VARIANTS, 8, bucket[1] // 4, bucket[0] // 4)
        with torch.no_grad():
            expected = vae.encode(decoder.pixels(raw, 1)[None]).latent_dist.parameters[0]
        assert torch.allclose(torch.from_numpy(views[1]), expected, atol=1e-5)


def test_a_bucketed_schedule_from_the_cache_sees_what_encoding_on_the_fly_sees(bucketed: Path, mixed: Path,
                                                                              vae_folder: Path, tmp_path: Path):
    seen: dict[str, list] = {"fly": [], "cache": []}
    runs = {}
    for name, folder in (("fly", None), ("cache", bucketed)):
        def record(batch, name=name):
            seen[name].append((batch["keys"], tuple(batch["bucket"]), batch["dropped"].tolist()))

        runs[name] = train("diffusion", scheduled(mixed, vae_folder, folder), tmp_path / name, on_batch=record)
    assert seen["cache"] == seen["fly"]
    assert [bucket for _, bucket, _ in seen["cache"]][:2] == [(32, 32)] * 2
    assert {bucket for _, bucket, _ in seen["cache"][2:]} <= {(48, 32), (32, 48)}
    assert runs["cache"].last_logs["train/loss"] == pytest.approx(runs["fly"].last_logs["train/loss"], rel=1e-3)


def test_a_bucketed_schedule_from_the_cache_resumes_exactly_inside_its_bucketed_phase(bucketed: Path, mixed: Path,
                                                                                      vae_folder: Path, tmp_path: Path,
                                                                                      straight_and_resumed):
    config = scheduled(mixed, vae_folder, bucketed)
    # Killed after step 5; its checkpoint is step 4, the second of the bucketed phase.
    _, straight, resumed = straight_and_resumed(
        config, tmp_path, stop_at=5, record=lambda b: (b["keys"], tuple(b["bucket"]), tuple(b["latent_dist"].shape)))
    assert resumed == straight[4:]
    assert all(shape[-1] * 4 == bucket[0] and shape[-2] * 4 == bucket[1] for _, bucket, shape in straight)


def test_a_run_at_a_size_or_bucket_set_the_cache_lacks_is_refused_by_name(bucketed: Path, mixed: Path,
                                                                           vae_folder: Path, tmp_path: Path):
    other = [SCHEDULE[0], {"steps": 3, "buckets": {"sizes": [[64, 32], [32, 64]], "step": 8}}]
    with pytest.raises(ConfigError, match=r"diffusion.phases\[1\]: buckets 32x64, 64x32 not cached; the cache holds "
                                          r"32 px squares; buckets 32x48, 48x32"):
        Run("diffusion", scheduled(mixed, vae_folder, bucketed, other), tmp_path / "a", resume=False)
    # A run at one of the cached geometries alone is served.
    alone = [{"steps": 6, "buckets": BUCKETS}]
    assert Run("diffusion", scheduled(mixed, vae_folder, bucketed, alone), tmp_path / "b", resume=False).task.cache
