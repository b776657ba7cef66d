"""The memorization check: which training images are generated samples closest to?

``check`` embeds generated samples with the embedder of the curation runs the model was
trained on (their ``pipeline.scoring.clip``, through the same loader, eval transform and
decoding as curation), and searches the runs' stored embeddings of the samples in the
shards the model read (``audit.provenance``) with an exact inner-product index: on
L2-normalised vectors that is the cosine similarity. Rejected records and shards training
did not read are not training images, so they are never candidates.

Output folder::

    memorization.parquet   one row per (sample, rank): similarity, flagged, the record's provenance
    memorization.html      the same as a table, generated and training thumbnails side by side
    thumbs/                those thumbnails (sample-NNNNN.jpg, train-R-KEY.jpg), linked relatively
    summary.json           counts, the embedder, the threshold, the highest similarity

Sample files are PNGs from ``cleanroom sample``: the prompt and seed are read from their
A1111-style ``parameters`` text chunk when there is one, else left blank.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import tarfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from audit.provenance import CurationRun, curation_runs
from curate.config import ConfigError
from curate.io import atomic_path, write_parquet_atomic, write_text_atomic
from curate.score import embed, images, store
from curate.runfolder import RunFolder
from curate.score.filter import ScoringConfig
from train.generate import SAMPLES_INDEX, read_infotext

log = logging.getLogger("cleanroom.memorization")

SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PARQUET = "memorization.parquet"
HTML = "memorization.html"
SUMMARY = "summary.json"
THUMBS = "thumbs"
THUMB_SIZE = 128
PROVENANCE = ("source", "license", "title", "creator", "url")  # catalog columns shown with a match
RANDOM_INIT_NOTE = ("the curation embedder is random-initialised (no pretrained tag, no checkpoint): "
                    "these similarities say nothing about memorization")


@dataclass(frozen=True)
class Sample:
    path: Path
    prompt: str
    seed: int | None


@dataclass
class TrainingSet:
    """The embeddings of every trained sample that has one; ``rows[i]`` describes ``vectors[i]``."""

    rows: list[dict[str, Any]]  # run, key, shard and PROVENANCE
    vectors: np.ndarray  # float32 (len(rows), dim), L2-normalised
    missing: dict[str, list[str]]  # run folder -> trained keys without an embedding


@dataclass
class Summary:
    samples: int
    training_images: int  # trained samples searched (those with an embedding)
    missing_embeddings: int  # trained samples that could not be searched
    embedder: str  # open_clip model name
    pretrained: str | None
    checkpoint: str | None
    random_init: bool
    threshold: float
    k: int
    flagged: int  # samples with at least one training image at or above the threshold
    flagged_pairs: int
    max_similarity: float
    # per run: out, shards, training_images, missing_embeddings, missing_examples (up to 5 keys)
    runs: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None


# ---------------------------------------------------------------- generated samples


def folder_samples(folder: Path) -> list[Path]:
    """The samples `cleanroom sample` listed in the folder (not its grid), else every image in it."""
    index = folder / SAMPLES_INDEX
    if index.is_file():
        return [folder / json.loads(line)["file"] for line in index.read_text().splitlines() if line.strip()]
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)


def sample_files(samples: list[Path] | Path) -> list[Path]:
    """The image files named, a folder standing for its samples (`folder_samples`)."""
    named = [Path(samples)] if isinstance(samples, (str, Path)) else [Path(s) for s in samples]
    files: list[Path] = []
    for path in named:
        if path.is_dir():
            files.extend(folder_samples(path))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such sample file or folder")
    files = list(dict.fromkeys(files))  # a file named twice (itself and its folder) is one sample
    if not files:
        raise FileNotFoundError(f"no sample images ({', '.join(SAMPLE_SUFFIXES)}) in {', '.join(map(str, named))}")
    return files


def read_sample(path: Path) -> Sample:
    try:
        fields = read_infotext(path)
    except Exception as e:  # PIL raises several types for files it cannot read
        raise ValueError(f"{path}: not a readable image ({e})") from e
    seed = fields.get("Seed", "")
    return Sample(path, fields["prompt"], int(seed) if seed.lstrip("-").isdigit() else None)


# ---------------------------------------------------------------- the curation runs' embedder and embeddings


def scoring(run: CurationRun) -> ScoringConfig:
    """The scoring block of a run's run.yaml; the run must have embedded its images."""
    scoring = run.config().pipeline.scoring
    if scoring is None:
        raise ConfigError(f"{run.folder.run_yaml}: the run {run.out} has no embeddings (pipeline.scoring.clip is "
                          f"not set), so there is nothing to search; re-run curation with a scoring.clip embedder")
    return scoring


def shared_scoring(runs: list[CurationRun]) -> ScoringConfig:
    """The one scoring config of all runs: samples are embedded once, so every store must be comparable."""
    configs = [scoring(run) for run in runs]
    embedders = {config.clip.describe() for config in configs}
    if len(embedders) > 1:
        named = "; ".join(f"{run.out}: {config.clip.describe()}" for run, config in zip(runs, configs))
        raise ConfigError(f"the model was trained on curation runs embedded by different models ({named}); their "
                          f"embeddings are not comparable, so no single embedder can search them")
    return configs[0]


def trained_samples(run: CurationRun) -> list[dict[str, Any]]:
    """Catalog rows of the samples in the shards training read, in key order."""
    columns = ("key", "shard", *PROVENANCE)
    placeholders = ", ".join("?" for _ in run.shards)
    found = run.query(f"SELECT {', '.join(columns)} FROM samples WHERE shard IN ({placeholders}) ORDER BY key",
                      list(run.shards))
    return [{"run": str(run.out), **dict(zip(columns, row))} for row in found]


def training_set(runs: list[CurationRun]) -> TrainingSet:
    rows: list[dict[str, Any]] = []
    blocks: list[np.ndarray] = []
    missing: dict[str, list[str]] = {}
    for run in runs:
        stored = store.load(run.folder.embeddings)
        position = {key: i for i, key in enumerate(stored.keys)}
        samples = trained_samples(run)
        found = [row for row in samples if row["key"] in position]
        missing[str(run.out)] = [row["key"] for row in samples if row["key"] not in position]
        rows.extend(found)
        blocks.append(stored.vectors[[position[row["key"]] for row in found]].astype(np.float32))
    if not rows:
        raise ValueError(f"no embedding for any sample of the trained shards of {', '.join(str(r.out) for r in runs)}")
    vectors = np.concatenate(blocks)
    # float16 storage leaves norms off 1 by ~1e-4: renormalised, an exact copy scores at most 1.
    return TrainingSet(rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), missing)


# ---------------------------------------------------------------- embedding and search


def embed_samples(samples: list[Sample], config: ScoringConfig) -> np.ndarray:
    """L2-normalised embeddings, decoded and transformed as curation did; on a GPU when there is one."""
    embedder = embed.Embed(config.clip.model_copy(update={"device": "auto"}), config.batch_size)
    vectors = np.zeros((len(samples), embedder.loaded.embed_dim), dtype=np.float32)
    for start in range(0, len(samples), config.batch_size):
        chunk = samples[start:start + config.batch_size]
        pictures = [images.rgb(s.path.read_bytes(), str(s.path)) for s in chunk]
        vectors[start:start + len(chunk)] = embedder.encode(pictures)
    return vectors


def nearest(training: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (similarities, training rows) per query, exact inner product."""
    import faiss

    if training.shape[1] != queries.shape[1]:
        raise ValueError(f"the stored embeddings are {training.shape[1]}-d but the embedder makes "
                         f"{queries.shape[1]}-d ones: the store was not written by this run's embedder")
    index = faiss.IndexFlatIP(training.shape[1])
    index.add(np.ascontiguousarray(training))
    return index.search(np.ascontiguousarray(queries), min(k, index.ntotal))


# ---------------------------------------------------------------- thumbnails


def save_thumb(picture: Any, path: Path) -> None:
    picture = picture.convert("RGB")
    picture.thumbnail((THUMB_SIZE, THUMB_SIZE))
    with atomic_path(path) as tmp:
        picture.save(tmp, format="JPEG", quality=85)


def training_thumbs(rows: list[dict[str, Any]], runs: list[CurationRun], folder: Path) -> dict[tuple[str, str], str]:
    """Thumbnails of the given training records, read from their shard tars; (run, key) -> file name.

    Named by the run's position and the key: one source record may be in two runs.
    """
    by_shard: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        by_shard[(row["run"], row["shard"])].add(row["key"])
    number = {str(run.out): n for n, run in enumerate(runs)}
    names: dict[tuple[str, str], str] = {}
    for (run, shard), keys in by_shard.items():
        tar_path = RunFolder(Path(run)).shards / f"{shard}.tar"
        with tarfile.open(tar_path) as tar:
            for key in sorted(keys):
                try:
                    data = tar.extractfile(f"{key}.jpg").read()
                except KeyError:
                    raise FileNotFoundError(f"{tar_path}: no {key}.jpg, though the catalog lists {key} "
                                            f"in {shard}") from None
                name = f"train-{number[run]}-{key}.jpg"
                save_thumb(images.rgb(data, key), folder / name)
                names[(run, key)] = name
    return names


def sample_thumbs(samples: list[Sample], folder: Path) -> list[str]:
    from PIL import Image

    names = []
    for number, sample in enumerate(samples):
        name = f"sample-{number:05d}.jpg"
        with Image.open(sample.path) as picture:
            save_thumb(picture, folder / name)
        names.append(name)
    return names


# ---------------------------------------------------------------- results


def match_table(samples: list[Sample], training: TrainingSet, similarities: np.ndarray, positions: np.ndarray,
                threshold: float) -> pa.Table:
    """One row per (sample, rank): rank 1 is the nearest training image."""
    rows = []
    for sample, found, scores in zip(samples, positions, similarities):
        for rank, (position, similarity) in enumerate(zip(found, scores), start=1):
            record = training.rows[position]
            rows.append({"sample": str(sample.path), "prompt": sample.prompt, "seed": sample.seed, "rank": rank,
                         "key": record["key"], "similarity": float(similarity),
                         "flagged": bool(similarity >= threshold), "run": record["run"], "shard": record["shard"],
                         **{column: record[column] for column in PROVENANCE}})
    schema = pa.schema([("sample", pa.string()), ("prompt", pa.string()), ("seed", pa.int64()),
                        ("rank", pa.int32()), ("key", pa.string()), ("similarity", pa.float32()),
                        ("flagged", pa.bool_()), ("run", pa.string()), ("shard", pa.string()),
                        *((column, pa.string()) for column in PROVENANCE)])
    return pa.Table.from_pylist(rows, schema=schema)


def summarise(samples: list[Sample], training: TrainingSet, runs: list[CurationRun], config: ScoringConfig,
              table: pa.Table, threshold: float, k: int) -> Summary:
    spec = config.clip
    random_init = not (spec.pretrained or spec.checkpoint)
    flagged = [row for row in table.to_pylist() if row["flagged"]]
    searched: defaultdict[str, int] = defaultdict(int)
    for row in training.rows:
        searched[row["run"]] += 1
    return Summary(
        samples=len(samples), training_images=len(training.rows),
        missing_embeddings=sum(len(keys) for keys in training.missing.values()),
        embedder=spec.model, pretrained=spec.pretrained, checkpoint=spec.checkpoint, random_init=random_init,
        threshold=threshold, k=k, flagged=len({row["sample"] for row in flagged}), flagged_pairs=len(flagged),
        max_similarity=max(table["similarity"].to_pylist()),
        runs=[{"out": str(run.out), "shards": list(run.shards), "training_images": searched[str(run.out)],
               "missing_embeddings": len(training.missing[str(run.out)]),
               "missing_examples": training.missing[str(run.out)][:5]} for run in runs],
        note=RANDOM_INIT_NOTE if random_init else None)


def _cell(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def _provenance(row: dict[str, Any]) -> str:
    link = (f'<a href="{_cell(row["url"])}">{_cell(row["url"])}</a>'
            if str(row["url"] or "").startswith(("http://", "https://")) else _cell(row["url"]))
    return (f'<b>{_cell(row["title"]) or "(untitled)"}</b><br>{_cell(row["creator"])}<br>'
            f'{_cell(row["license"])} &middot; {_cell(row["source"])}<br>{link}<br>'
            f'<small>{_cell(row["key"])} in {_cell(row["shard"])} of {_cell(row["run"])}</small>')


def _sample_cell(row: dict[str, Any], thumb: str) -> str:
    seed = "" if row["seed"] is None else f"<br>seed {row['seed']}"
    return (f'<td><img src="{THUMBS}/{thumb}"><br><code>{_cell(Path(row["sample"]).name)}</code>'
            f'<br>{_cell(row["prompt"]) or "<i>(no prompt)</i>"}{seed}</td>')


def _match_cell(row: dict[str, Any], thumb: str) -> str:
    flag = (' class="flagged"', " FLAGGED") if row["flagged"] else ("", "")
    return (f'<td{flag[0]}><img src="{THUMBS}/{thumb}"><br><b>{row["similarity"]:.4f}{flag[1]}</b><br>'
            f'{_provenance(row)}</td>')


def render_html(table: pa.Table, summary: Summary, sample_names: list[str],
                training_names: dict[tuple[str, str], str]) -> str:
    """One table row per sample: its thumbnail, then each nearest training image with similarity and provenance."""
    by_sample: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in table.to_pylist():
        by_sample[row["sample"]].append(row)
    body = []
    for number, matches in enumerate(by_sample.values()):
        cells = [_sample_cell(matches[0], sample_names[number])]
        cells.extend(_match_cell(match, training_names[(match["run"], match["key"])]) for match in matches)
        row_flag = ' class="flagged-row"' if any(m["flagged"] for m in matches) else ""
        body.append(f"<tr{row_flag}>{''.join(cells)}</tr>")
    ranks = max(len(matches) for matches in by_sample.values())  # fewer than k when training has fewer images
    header = "".join(f"<th>nearest {rank}</th>" for rank in range(1, ranks + 1))
    warning = f'<p class="warning">Warning: {_cell(summary.note)}.</p>' if summary.note else ""
    missing = (f'<p class="warning">{summary.missing_embeddings} trained samples have no stored embedding and '
               f'were not searched (see summary.json).</p>' if summary.missing_embeddings else "")
    embedder = _cell(f"{summary.embedder}/{summary.checkpoint or summary.pretrained or 'random-init'}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Memorization check</title>
<style>
body {{ font-family: sans-serif; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; font-size: 13px; max-width: 260px; }}
img {{ width: {THUMB_SIZE}px; height: {THUMB_SIZE}px; object-fit: contain; image-rendering: pixelated; }}
tr.flagged-row {{ background: #fff0f0; }} td.flagged {{ background: #ffc8c8; }}
.warning {{ background: #fff3b0; padding: 8px; font-weight: bold; }}
</style></head><body>
<h1>Memorization check</h1>
{warning}{missing}
<p>{summary.samples} samples searched against {summary.training_images} training images with {embedder};
{summary.flagged} samples ({summary.flagged_pairs} pairs) at or above cosine similarity {summary.threshold};
highest similarity {summary.max_similarity:.4f}.</p>
<table><tr><th>generated</th>{header}</tr>
{chr(10).join(body)}
</table></body></html>
"""


# ---------------------------------------------------------------- the check


def check(model_path: Path, samples: list[Path] | Path, out: Path, threshold: float = 0.95, k: int = 3) -> Summary:
    """Embed ``samples``, find their ``k`` nearest training images, write the table, page and summary to ``out``."""
    from train.generate import model_folder  # torch and diffusers load here, not when the CLI is built
    from train.loop import TRAINING_RECORD

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    read = [read_sample(path) for path in sample_files(samples)]
    record = model_folder(Path(model_path)) / TRAINING_RECORD
    runs = curation_runs(json.loads(record.read_text()))
    config = shared_scoring(runs)
    training = training_set(runs)
    for run, keys in training.missing.items():
        if keys:
            log.warning("%s: %d trained samples have no stored embedding and are not searched, e.g. %s",
                        run, len(keys), keys[:3])
    similarities, positions = nearest(training.vectors, embed_samples(read, config), k)
    table = match_table(read, training, similarities, positions, threshold)
    summary = summarise(read, training, runs, config, table, threshold, k)
    out = Path(out)
    matched = [training.rows[p] for p in np.unique(positions)]
    page = render_html(table, summary, sample_thumbs(read, out / THUMBS), training_thumbs(matched, runs, out / THUMBS))
    write_parquet_atomic(table, out / PARQUET)
    write_text_atomic(page, out / HTML)
    write_text_atomic(json.dumps(asdict(summary), indent=2), out / SUMMARY)
    return summary


def _memorization(args: argparse.Namespace) -> int:
    summary = check(Path(args.model), [Path(s) for s in args.samples], Path(args.out), args.threshold, args.k)
    print(json.dumps({"out": str(Path(args.out).resolve()), **asdict(summary)}, indent=2))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser("memorization")  # its help line is in audit.cli.COMMANDS
    command.add_argument("model", help="model folder (diffusion/final) or the training run folder holding it")
    command.add_argument("--samples", nargs="+", required=True,
                         help="generated images, or folders of them (.png/.jpg/.jpeg/.webp)")
    command.add_argument("--out", required=True, help="folder for memorization.html/.parquet, thumbs/, summary.json")
    command.add_argument("--threshold", type=float, default=0.95,
                         help="flag pairs at or above this cosine similarity (default 0.95, for a real CLIP)")
    command.add_argument("--k", type=_positive_int, default=3, help="training images listed per sample (default 3)")
    command.set_defaults(handler=_memorization)
