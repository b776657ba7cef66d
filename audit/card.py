"""``cleanroom model-card MODEL [--out PATH]``: a trained model's MODEL_CARD.md, computed from its files.

Nothing on a card is typed here. It is read from the model folder (``config.yaml``,
``training.json``, the safetensors headers), from the autoencoder folder that training.json
names, from the curation runs behind the shard files the diffusion job read
(``audit.provenance``: their ``catalog.duckdb``, counted over those shards only, ``run.yaml``
and ``stats.json``), and from the model license file ``MODEL_LICENSE``, whose title and
Attachment A the card quotes. A card therefore changes whenever one of those files does, and
cannot describe data the model did not see.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from audit.provenance import CurationRun, curation_runs
from curate import describe, records
from curate.config import LICENSES_DIR, RunConfig
from curate.licenses import License, families
from curate.io import write_bytes_atomic, write_text_atomic
from curate.optin.report import card_section
from curate.score import aesthetic, embed, nsfw, watermark
from train import config as config_io
from train.config import TrainConfig
from train import generate
from train.generate import model_folder
from train.loop import TRAINING_RECORD

MODEL_LICENSE = LICENSES_DIR / "cleanroom-openrail-m.md"
CARD = "MODEL_CARD.md"
LICENSE_FILE = "LICENSE.md"  # the model license's name beside exported weights
# Fields the card reads from every training.json; a record without them was not written by train.loop.
RECORD_FIELDS = ("job", "step", "processes", "samples_seen", "finished_at", "ema", "shards")
RANDOM_INIT = "random-init"  # how curate's model descriptions name random weights
# Above this share a single source or license family shapes what the model draws.
DOMINANT_SHARE = 0.5
TRAINED = "list_contains(?, shard)"  # SQL: the sample is in a shard the model was trained on
# What each model stats.json names produced, in words.
PRODUCED = {embed.EMBEDDING: "CLIP embeddings (near-dedup, aesthetic and NSFW heads)",
            aesthetic.SCORE: "aesthetic scores", watermark.SCORE: "watermark probabilities",
            nsfw.SCORE: "NSFW probabilities"}


# ---------------------------------------------------------------- reading the model


@dataclass(frozen=True)
class Job:
    """One training job's final folder: its resolved config and its training.json."""

    folder: Path
    config: TrainConfig
    training: dict[str, Any]

    @property
    def finished_at(self) -> datetime:
        return datetime.fromisoformat(self.training["finished_at"])


def read_job(folder: Path) -> Job:
    config_path, record_path = folder / "config.yaml", folder / TRAINING_RECORD
    for path in (config_path, record_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {folder} is not the final folder of a `cleanroom train` job")
    training = json.loads(record_path.read_text())
    missing = [name for name in RECORD_FIELDS if name not in training]
    if missing:
        raise ValueError(f"{record_path}: no {', '.join(missing)}; it was not written by `cleanroom train`")
    return Job(folder, config_io.parse(config_path.read_text(), str(config_path)), training)


def read_autoencoder(diffusion: Job) -> Job | None:
    """The autoencoder job the UNet was trained on; None when that folder has no training record
    (an autoencoder from elsewhere, or a folder moved since)."""
    if "autoencoder" not in diffusion.training:
        raise ValueError(f"{diffusion.folder / TRAINING_RECORD}: no autoencoder field; is this a diffusion model?")
    folder = Path(diffusion.training["autoencoder"])
    if not (folder / TRAINING_RECORD).is_file() or not (folder / "config.yaml").is_file():
        return None
    return read_job(folder)


def parameters(folder: Path) -> int:
    """Parameters in the safetensors files of `folder`, from their headers (no weights loaded)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights to count parameters from")
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class ModelLicense:
    name: str  # the license file's title
    path: Path
    restrictions: list[str]  # Attachment A, in order


def read_license(path: Path = MODEL_LICENSE) -> ModelLicense:
    """The title and the Attachment A items of a license file (numbered items, wrapped lines joined)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    titles = [line[2:].strip() for line in lines if line.startswith("# ")]
    starts = [i for i, line in enumerate(lines) if line.startswith("## Attachment A")]
    if not titles or not starts:
        raise ValueError(f"{path}: a model license needs a '# ' title line and a '## Attachment A' section")
    restrictions: list[str] = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("#"):
            break
        item = re.match(r"^\d+\.\s+(.*)$", line)
        if item:
            restrictions.append(item[1].strip())
        elif line.startswith(" ") and line.strip() and restrictions:
            restrictions[-1] += " " + line.strip()
    if not restrictions:
        raise ValueError(f"{path}: its Attachment A lists no numbered use restrictions")
    return ModelLicense(titles[0], path, restrictions)


# ---------------------------------------------------------------- reading the curation runs


@dataclass(frozen=True)
class Optin:
    """The opt-in samples among the trained ones."""

    images: int
    consents: int  # consent records behind them
    contributors: int  # a consent record missing from the catalog's registry counts as one contributor
    unregistered: int  # images whose consent record is not in the catalog's registry tables
    no_release: int  # images whose consent does not allow releasing a model


@dataclass(frozen=True)
class RunFacts:
    run: CurationRun
    config: RunConfig
    stats: dict[str, Any]
    images: dict[tuple[str, str], int]  # (source, license) -> trained samples
    licenses: dict[str, License]  # the licenses of the trained samples
    origins: dict[str, int]  # caption origin -> trained samples
    optin: Optin
    missing_shards: list[str]  # trained shards with no samples in the catalog now
    optin_section: str  # curate.optin.report's paragraph, "" when the run had no opt-in source
    removed_after_training: int  # samples revoked from the shards after the model finished training

    @property
    def total(self) -> int:
        return sum(self.images.values())

    def source_name(self, source: str) -> str:
        names = {entry.source: entry.name for entry in self.config.sources}
        return f"{names.get(source, source)} (`{source}`)"


def read_run(run: CurationRun, trained_at: datetime) -> RunFacts:
    for path in (run.folder.run_yaml, run.folder.stats_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {run.out} is not a finished curation run")
    shards = list(run.shards)
    images = {(source, lic): n for source, lic, n in run.query(
        f"SELECT source, license, count(*) FROM samples WHERE {TRAINED} GROUP BY ALL ORDER BY ALL", [shards])}
    present = {shard for (shard,) in run.query(f"SELECT DISTINCT shard FROM samples WHERE {TRAINED}", [shards])}
    removed = sum(entry["samples_removed"] for entry in run.folder.revocation_log()
                  if datetime.fromisoformat(entry["applied_at"]) > trained_at)
    return RunFacts(
        run=run, config=run.config(),
        stats=run.folder.stats(), images=images,
        licenses=read_licenses(run, sorted({lic for _, lic in images})),
        origins=dict(run.query(f"SELECT coalesce(caption_origin, '(none)'), count(*) FROM samples WHERE {TRAINED} "
                               "GROUP BY 1 ORDER BY 2 DESC, 1", [shards])),
        optin=read_optin(run), missing_shards=[s for s in shards if s not in present],
        optin_section=card_section(run.out, trained_at), removed_after_training=removed)


def read_licenses(run: CurationRun, ids: list[str]) -> dict[str, License]:
    """The catalog's licenses rows for `ids`: the registry as the run was checked against it."""
    rows = run.query("SELECT license, name, url, family, allowed_for_training, attribution_required FROM licenses "
                     "WHERE list_contains(?, license)", [ids])
    found = {row[0]: License(*row) for row in rows}
    unknown = sorted(set(ids) - set(found))
    if unknown:
        raise ValueError(f"{run.folder.catalog}: samples carry licenses its licenses table does not list: "
                         f"{', '.join(unknown)}")
    return found


def read_optin(run: CurationRun) -> Optin:
    """Opt-in samples (those with a consent id) in the trained shards, joined to the consent registry
    when the catalog has it, which is what ties a consent record to its contributor."""
    has_registry = run.query("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'optin_consents'")[0][0]
    if has_registry:
        sql = ("SELECT count(*), count(DISTINCT s.consent_id), "
               "count(DISTINCT coalesce(c.contributor_id, 'consent:' || s.consent_id)), "
               "count(*) FILTER (WHERE c.consent_id IS NULL), count(*) FILTER (WHERE NOT c.scope_model_release) "
               "FROM samples s LEFT JOIN optin_consents c ON c.consent_id = s.consent_id "
               "WHERE s.consent_id IS NOT NULL AND list_contains(?, s.shard)")
    else:
        sql = ("SELECT count(*), count(DISTINCT consent_id), count(DISTINCT consent_id), count(*), 0 "
               f"FROM samples WHERE consent_id IS NOT NULL AND {TRAINED}")
    return Optin(*run.query(sql, [list(run.shards)])[0])


# ---------------------------------------------------------------- the facts, together


@dataclass(frozen=True)
class Facts:
    diffusion: Job
    autoencoder: Job | None
    runs: list[RunFacts]
    autoencoder_runs: list[RunFacts] | None  # None: same shards as the diffusion job
    conditioning: dict[str, Any]
    unet: dict[str, Any]  # unet/config.json
    vae: dict[str, Any]  # vae/config.json
    parameters: dict[str, int]  # unet, vae, conditioning
    license: ModelLicense

    @property
    def total(self) -> int:
        return sum(r.total for r in self.runs)

    @property
    def random_encoder(self) -> bool:
        return self.conditioning.get("pretrained") is None


def gather(model_path: Path, license_path: Path = MODEL_LICENSE) -> Facts:
    folder = model_folder(Path(model_path))
    diffusion = read_job(folder)
    autoencoder = read_autoencoder(diffusion)
    runs = [read_run(run, diffusion.finished_at) for run in curation_runs(diffusion.training)]
    same_shards = autoencoder is None or sorted(autoencoder.training["shards"]) == sorted(diffusion.training["shards"])
    autoencoder_runs = None if same_shards else [read_run(run, autoencoder.finished_at)
                                                 for run in curation_runs(autoencoder.training)]
    return Facts(
        diffusion=diffusion, autoencoder=autoencoder, runs=runs, autoencoder_runs=autoencoder_runs,
        conditioning=read_json(folder / "conditioning" / "conditioning.json"),
        unet=read_json(folder / "unet" / "config.json"), vae=read_json(folder / "vae" / "config.json"),
        parameters={part: parameters(folder / part) for part in ("unet", "vae", "conditioning")},
        license=read_license(license_path))


# ---------------------------------------------------------------- formatting


def count(n: int) -> str:
    """1,234,567 (1.2M): exact, and readable at a glance."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n:,} ({n / size:.1f}{unit})"
    return f"{n:,}"


def things(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "0%"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def link(lic: License) -> str:
    return f"[{lic.name}]({lic.url}) (`{lic.id}`)" if lic.url else f"{lic.name} (`{lic.id}`)"


def random_models(run: RunFacts) -> dict[str, str]:
    """What each random-weight model of a run produced -> its description."""
    models = {PRODUCED.get(column, column): model for column, model in run.stats.get("models", {}).items()}
    captions = run.config.pipeline.captions
    if captions.captioner:
        models["model captions"] = captions.captioner.describe()
    if captions.similarity:
        models["caption-image similarity"] = captions.similarity.model.describe()
    return {what: model for what, model in models.items() if RANDOM_INIT in model}


# ---------------------------------------------------------------- sections


def warnings(facts: Facts) -> list[str]:
    """What someone must know before using or sharing the model: shown above everything else."""
    found = []
    if facts.random_encoder:
        found.append(f"The conditioning encoder (open_clip `{facts.conditioning['model']}`) has random-initialised "
                     "weights that were never trained: prompts carry no learned meaning, and this model shows that "
                     "the pipeline runs, not that it can make pictures from text.")
    no_release = sum(r.optin.no_release for r in facts.runs)
    if no_release:
        found.append(f"{things(no_release, 'training image')} came from contributors who did not permit releasing "
                     "models: this model must not be published or shared outside the project.")
    return [line for text in found for line in (f"> **Warning:** {text}", "")]


def run_name(run: RunFacts) -> str:
    """A curation run by its folder's name: a card must not carry the paths of the machine it was made on."""
    return run.run.out.name


def front_matter(facts: Facts) -> list[str]:
    """Hugging Face model-card metadata. From scratch: no base model."""
    text_to_image = facts.conditioning["encoder"] == "text"
    licenses = sorted({lid for run in facts.runs for lid in run.licenses})
    meta = {"license": "other", "license_name": facts.license.path.stem, "license_link": LICENSE_FILE,
            "library_name": "diffusers", "pipeline_tag": "text-to-image" if text_to_image else "image-to-image",
            "tags": ["latent-diffusion", "trained-from-scratch", "cleanroom",
                     *(f"training-data-license:{lid}" for lid in licenses)]}
    return ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]


def header(facts: Facts) -> list[str]:
    return [*front_matter(facts), f"# {facts.diffusion.config.name}: model card", "",
            "Generated by `cleanroom model-card` from the model folder, its training records and the catalogs of "
            "the curation runs it was trained on; regenerate it rather than editing it.", "", *warnings(facts)]


def model_section(facts: Facts) -> list[str]:
    c, unet, vae = facts.conditioning, facts.unet, facts.vae
    kind = ("text-to-image" if c["encoder"] == "text" else "image-conditioned (image variations)")
    tower = (f"text tower, {c['layer']} layer states" if c["encoder"] == "text" else "image embedding")
    pretrained = (f"pretrained `{c['pretrained']}`" if c["pretrained"] else
                  "**random-initialised (no pretrained weights)**")
    scaling = f"{vae['scaling_factor']:.5g}" if vae.get("scaling_factor") else "not set"
    finished = (f"{facts.diffusion.training['finished_at']} (diffusion)"
                + (f", {facts.autoencoder.training['finished_at']} (autoencoder)" if facts.autoencoder else ""))
    return ["## Model", "",
            f"- Kind: latent diffusion, {kind}: a UNet denoises the latents of a frozen autoencoder, conditioned "
            "by a frozen open_clip encoder.",
            f"- UNet: size `{facts.diffusion.config.diffusion.model}`, {count(facts.parameters['unet'])} parameters, "
            f"block widths {unet['block_out_channels']}, cross-attention width {unet['cross_attention_dim']}.",
            f"- Autoencoder (VAE): {vae_origin(facts)}, "
            f"{count(facts.parameters['vae'])} parameters, {vae['latent_channels']} latent channels, "
            f"{2 ** (len(vae['block_out_channels']) - 1)}x downsampling, scaling factor {scaling}.",
            f"- Conditioning: open_clip `{c['model']}`, {pretrained}, {tower}, "
            f"{count(facts.parameters['conditioning'])} parameters.",
            f"- Finished training: {finished}."]


def autoencoder_name(facts: Facts) -> str:
    """The autoencoder folder the diffusion job read, by name (not the path of the machine that trained it)."""
    return Path(facts.diffusion.training["autoencoder"]).name


def vae_origin(facts: Facts) -> str:
    if facts.autoencoder is None:
        return f"from `{autoencoder_name(facts)}`"
    return f"size `{facts.autoencoder.config.autoencoder.model}`"


def source_counts(runs: list[RunFacts]) -> dict[str, Counter]:
    """Source label -> images per license, over the trained shards of every run."""
    counts: dict[str, Counter] = {}
    for run in runs:
        for (source, lid), n in run.images.items():
            counts.setdefault(run.source_name(source), Counter())[lid] += n
    return counts


def family_counts(runs: list[RunFacts]) -> tuple[Counter, dict[str, dict[str, License]]]:
    """Images per license family, and the licenses in each family."""
    images: Counter = Counter()
    members: dict[str, dict[str, License]] = {}
    for run in runs:
        for (_, lid), n in run.images.items():
            lic = run.licenses[lid]
            images[lic.family] += n
            members.setdefault(lic.family, {})[lid] = lic
    return images, members


def source_rows(runs: list[RunFacts]) -> list[list[Any]]:
    counts = source_counts(runs)
    total = sum(sum(c.values()) for c in counts.values())
    rows = [[name, sum(c.values()), share(sum(c.values()), total),
             ", ".join(f"`{lid}` {n}" for lid, n in sorted(c.items()))] for name, c in sorted(counts.items())]
    return rows + [["**total**", f"**{total}**", "", ""]]


def family_rows(runs: list[RunFacts]) -> list[list[Any]]:
    images, members = family_counts(runs)
    descriptions = families()
    return [[f"`{family}`: {descriptions.get(family, '')}", n,
             ", ".join(link(lic) for _, lic in sorted(members[family].items()))] for family, n in images.most_common()]


def attribution_lines(facts: Facts) -> list[str]:
    needing: Counter = Counter()
    for run in facts.runs:
        for (_, lid), n in run.images.items():
            if run.licenses[lid].attribution_required:
                needing[lid] += n
    if not needing:
        return [f"- Attribution: none of the {facts.total} images' licenses requires attribution."]
    ids = ", ".join(f"'{lid}'" for lid in sorted(needing))
    return [f"- Attribution: {sum(needing.values())} of {facts.total} images require it "
            f"({', '.join(f'`{lid}` {n}' for lid, n in sorted(needing.items()))}); their attribution lines are in "
            f"the catalog: `cleanroom query OUT \"SELECT key, attribution FROM samples WHERE license IN ({ids})\"`."]


def optin_lines(facts: Facts) -> list[str]:
    totals = [sum(getattr(r.optin, name) for r in facts.runs)
              for name in ("images", "consents", "contributors", "unregistered")]
    images, consents, contributors, unregistered = totals
    if not images:
        return ["- Opt-in: none of the images came from opt-in contributors."]
    lines = [f"- Opt-in: {things(images, 'image')} from {things(contributors, 'contributor')} "
             f"({things(consents, 'consent record')})."]
    if unregistered:
        lines.append(f"  {unregistered} of them have consent records that are not in the catalog's registry tables "
                     "(the opt-in store was not beside the run): each such record is counted as one contributor.")
    return lines


def data_section(facts: Facts) -> list[str]:
    shards = len(facts.diffusion.training["shards"])
    runs = ", ".join(f"`{run_name(r)}`" for r in facts.runs)
    lines = ["## Training data", "",
             f"{facts.total} images, counted in the catalogs over the {shards} shard files the diffusion job read "
             f"(training.json), from {things(len(facts.runs), 'curation run')}: {runs}.", "",
             *table(["source", "images", "share", "licenses"], source_rows(facts.runs)), "",
             "License families:", "", *table(["family", "images", "licenses"], family_rows(facts.runs)), "",
             *attribution_lines(facts), *optin_lines(facts), *autoencoder_data_lines(facts)]
    return lines + [line for run in facts.runs if run.optin_section for line in ["", run.optin_section.rstrip()]]


def autoencoder_data_lines(facts: Facts) -> list[str]:
    if facts.autoencoder is None:
        return [f"- Autoencoder: `{autoencoder_name(facts)}` has no cleanroom training record; "
                "what it was trained on is not described here."]
    if facts.autoencoder_runs is None:
        return ["- Autoencoder: trained on the same shard files."]
    counts = {name: sum(c.values()) for name, c in source_counts(facts.autoencoder_runs).items()}
    return [f"- Autoencoder: trained on other shard files, {sum(counts.values())} images "
            f"({', '.join(f'{name} {n}' for name, n in sorted(counts.items()))}) from "
            + ", ".join(f"`{run_name(r)}`" for r in facts.autoencoder_runs) + "."]


def filter_lines(run: RunFacts) -> list[str]:
    return describe.pipeline_lines(run.config)


def rejection_rows(run: RunFacts) -> list[list[Any]]:
    """Records per stage and reason, in pipeline order."""
    return [[stage, fate, n] for stage, counts in run.stats["by_stage"].items()
            for fate, n in counts.get("fates", {}).items()]


def curation_section(facts: Facts) -> list[str]:
    lines = ["## Curation", ""]
    for run in facts.runs:
        lines += [f"### Run `{run_name(run)}` (pipeline `{run.config.pipeline.name}`)", "", *filter_lines(run), "",
                  f"{run.stats['records']} records in, {run.stats['kept']} kept; the others by stage and reason:", "",
                  *table(["stage", "fate", "records"], rejection_rows(run)), ""]
    return lines[:-1]


def caption_lines(run: RunFacts) -> list[str]:
    captions = run.config.pipeline.captions
    similarity = captions.similarity
    rejected = run.stats["by_fate"].get(f"{records.REJECTED}:low_clip_similarity", 0)
    origins = ", ".join(f"{origin} {n} ({share(n, run.total)})" for origin, n in run.origins.items())
    return [f"- Policy: the training caption (KEY.txt) is the first an image has of: {', '.join(captions.choose)}; "
            "every caption made is kept in its KEY.json.",
            f"- Metadata captions: per-source templates over each record's descriptive fields; languages "
            f"{', '.join(captions.metadata.languages)}; CC BY description text "
            + ("used: those captions owe its authors attribution." if captions.metadata.include_cc_by_description
               else "left out."),
            "- Model captioner: " + (f"`{captions.captioner.describe()}` (kind {captions.captioner.kind})."
                                     if captions.captioner else "none."),
            "- CLIP-similarity filter: " + (f"threshold {similarity.threshold} with `{similarity.model.describe()}`, "
                                            f"{rejected} records rejected." if similarity else "none."),
            f"- Captions of the trained images by origin: {origins or 'none'}."]


def captioning_section(facts: Facts) -> list[str]:
    lines = ["## Captioning", ""]
    for run in facts.runs:
        lines += [f"### Run `{run_name(run)}`", "", *caption_lines(run), ""]
    return lines[:-1]


def job_settings(job: Job) -> Any:
    """The config section of the job that wrote `job` (an AutoencoderJob or a DiffusionJob)."""
    return getattr(job.config, job.training["job"])


def settings_rows(facts: Facts) -> list[list[Any]]:
    jobs = [facts.autoencoder, facts.diffusion]

    def each(read: Callable[[Job], Any]) -> list[Any]:
        return [read(job) if job else "not recorded" for job in jobs]

    def ema(job: Job) -> str:
        section = job_settings(job).ema
        return f"decay {section.decay}" if job.training["ema"] and section else "off"

    def optim(job: Job) -> str:
        o = job_settings(job).optim
        return f"{o.lr:g}, warmup {o.warmup_steps} steps, AdamW weight decay {o.weight_decay:g}"

    data, diffusion = facts.diffusion.config.data, facts.diffusion.config.diffusion
    offset = diffusion.offset_noise
    return [
        ["resolution", *each(lambda j: f"{j.config.data.resolution} px, {j.config.data.crop} crop"
                                       + (", random flips" if j.config.data.flip else ""))],
        ["batch size per process", *each(lambda j: j.config.data.batch_size)],
        ["processes", *each(lambda j: j.training["processes"])],
        ["gradient accumulation", *each(lambda j: j.config.accelerate.gradient_accumulation_steps)],
        ["optimizer steps", *each(lambda j: f"{j.training['step']} of {job_settings(j).loop.steps}")],
        ["samples seen", *each(lambda j: j.training["samples_seen"])],
        ["learning rate", *each(optim)],
        ["precision", *each(lambda j: {"no": "fp32"}.get(j.config.accelerate.mixed_precision,
                                                         j.config.accelerate.mixed_precision))],
        ["EMA", *each(ema)],
        ["initialised from", *each(lambda j: job_settings(j).init or "scratch")],
        ["KL weight", f"{facts.autoencoder.config.autoencoder.kl_weight:g}" if facts.autoencoder else "not recorded",
         ""],
        ["prediction type", "", diffusion.prediction],
        ["noise schedule", "", f"{diffusion.noise.beta_schedule}, {diffusion.noise.num_train_timesteps} steps"],
        ["offset noise", "", f"{offset.strength} from step {offset.start_step} (p {offset.probability})"
                             if offset.strength else "off"],
        ["min-SNR weighting", "", f"gamma {diffusion.snr_gamma}" if diffusion.snr_gamma else "off (plain MSE)"],
        ["caption dropout", "", data.caption_dropout],
    ]


def training_section(facts: Facts) -> list[str]:
    return ["## Training", "", *table(["setting", "autoencoder", "diffusion"], settings_rows(facts))]


def usage_section(facts: Facts) -> list[str]:
    """How to run the exported folder (``cleanroom export``) with diffusers."""
    size = facts.diffusion.config.data.resolution
    if facts.conditioning["encoder"] != "text":
        return ["## Usage", "",
                "The folder `cleanroom export` writes (this card beside it) is a diffusers "
                "`StableDiffusionImageVariationPipeline` (`cleanroom sample MODEL --image IMAGE` draws the same "
                "images from the model folder):", "",
                "```python", "from diffusers import StableDiffusionImageVariationPipeline", "from PIL import Image", "",
                'pipe = StableDiffusionImageVariationPipeline.from_pretrained("path/to/export", safety_checker=None)',
                f'image = pipe(Image.open("reference.jpg"), height={size}, width={size}, '
                f'num_inference_steps=30).images[0]', "```"]
    return ["## Usage", "",
            "The folder `cleanroom export` writes (this card beside it) is a diffusers `StableDiffusionPipeline`:", "",
            "```python", "from diffusers import StableDiffusionPipeline", "",
            'pipe = StableDiffusionPipeline.from_pretrained("path/to/export", safety_checker=None)',
            f'image = pipe("a prompt", height={size}, width={size}, num_inference_steps=30).images[0]',
            "```", "",
            "The curation runs it was trained on each hold `DATASET_CARD.md` (sources, licenses, filters) and "
            "`CREDITS.md` (the attribution the licenses require) at their top level: "
            + ", ".join(f"`{run_name(r)}/DATASET_CARD.md`, `{run_name(r)}/CREDITS.md`" for r in facts.runs) + "."]


def samples_section(facts: Facts) -> list[str]:
    """The sample grid shipped beside the card (`generate.card_grid`), linked by its relative name."""
    if facts.conditioning["encoder"] != "text":
        return []
    settings, prompts = generate.card_settings(), generate.card_prompts(facts.diffusion.config)
    return ["## Samples", "", f"![Samples of {facts.diffusion.config.name}]({generate.CARD_GRID})", "",
            f"Drawn from the final weights with {settings.label}, {settings.steps} steps, CFG scale "
            f"{settings.cfg_scale:g}, at {facts.diffusion.config.data.resolution} px; the prompts are the ones "
            f"training validated on, prompt i from seed {settings.seed} + i "
            f"(`cleanroom sample MODEL --prompt ... --seed {settings.seed}` draws them again):", "",
            *(f"{i + 1}. {json.dumps(prompt, ensure_ascii=False)}, seed {settings.seed + i}"
              for i, prompt in enumerate(prompts))]


def license_section(facts: Facts) -> list[str]:
    lic = facts.license
    return ["## License", "",
            f"The model is released under the **{lic.name}** (`{lic.path.name}`, shipped beside this card). It lets "
            "you use, change and share the model; every copy and every derivative must carry these use "
            "restrictions (its Attachment A). You may not use the model, a derivative of it, or their output:", "",
            *(f"{i}. {text}" for i, text in enumerate(lic.restrictions, 1))]


def limitations(facts: Facts) -> list[str]:
    data = facts.diffusion.config.data
    total, seen = facts.total, facts.diffusion.training["samples_seen"]
    found = [f"Trained at {data.resolution}x{data.resolution} px: other sizes are untested.",
             f"It learned from {total} images in {facts.diffusion.training['step']} optimizer steps ({seen} samples, "
             f"{seen / total if total else 0:.2f} passes over the data)"
             + (": it has not seen every training image once." if seen < total else ".")]
    found += dominance(facts) + caption_limits(facts) + model_limits(facts) + run_limits(facts)
    return ["## Limitations", "", *(f"- {text}" for text in found)]


def dominance(facts: Facts) -> list[str]:
    sources = {name: sum(c.values()) for name, c in source_counts(facts.runs).items()}
    families = {f"`{family}`": n for family, n in family_counts(facts.runs)[0].items()}
    consequence = {"source": "that collection's subjects and styles dominate what the model draws",
                   "license family": "the data is only as varied as what is published under those terms"}
    return [f"{share(n, facts.total)} of the images share one {what}, {name}: {consequence[what]}."
            for what, counts in (("source", sources), ("license family", families))
            for name, n in counts.items() if n / facts.total > DOMINANT_SHARE]


def caption_limits(facts: Facts) -> list[str]:
    metadata = sum(r.origins.get("metadata", 0) for r in facts.runs)
    if not metadata:
        return []
    return [f"{share(metadata, facts.total)} of the captions are catalogue metadata (titles, creators, dates), "
            "not descriptions of what the picture shows: prompts that describe content are followed loosely."]


def model_limits(facts: Facts) -> list[str]:
    c = facts.conditioning
    found = [f"The conditioning encoder open_clip `{c['model']}` is random-initialised: its features carry no "
             "meaning learned from text or images." if facts.random_encoder else
             f"The conditioning encoder open_clip `{c['model']}` / `{c['pretrained']}` was trained by others, on "
             "data this card does not describe."]
    if facts.autoencoder is None:
        found.append(f"The autoencoder `{autoencoder_name(facts)}` has no cleanroom training record: "
                     "its training data and settings are not on this card.")
    for job in (facts.autoencoder, facts.diffusion):
        if job and job_settings(job).init:
            found.append(f"The {job.training['job']} job was fine-tuned from `{job_settings(job).init}`: what that "
                         "checkpoint was trained on is not described here.")
    return found


def run_limits(facts: Facts) -> list[str]:
    found = []
    for run in facts.runs:
        randoms = random_models(run)
        if randoms:
            found.append(f"Run `{run_name(run)}` used random-weight models, so what they produced means nothing and "
                         "the filters and dedup built on it did not select for what they are named after: "
                         + "; ".join(f"{what} from `{describe.without_folders(model)}`"
                                     for what, model in randoms.items()) + ".")
        if run.missing_shards:
            found.append(f"Shards {', '.join(run.missing_shards)} of `{run_name(run)}` were read in training but hold "
                         "no samples in its catalog now: the counts above leave out what they held.")
        if run.removed_after_training:
            found.append(f"After training, {things(run.removed_after_training, 'sample')} the model was trained on "
                         f"left the shards of `{run_name(run)}` because their contributors revoked consent; the model "
                         "was not retrained, and the counts above are of the shards as they are now.")
    return found


def render(model_path: Path) -> str:
    """The model card of the model at `model_path` (a model folder or a training run folder)."""
    facts = gather(Path(model_path))
    sections = [header(facts), model_section(facts), usage_section(facts), samples_section(facts),
                data_section(facts), curation_section(facts), captioning_section(facts), training_section(facts),
                license_section(facts), limitations(facts)]
    return "\n\n".join("\n".join(section).strip("\n") for section in sections if section) + "\n"


def sample_files(model_path: Path) -> dict[str, bytes]:
    """The sample grid the card links, by its name beside the card (none for an image-variations model)."""
    model = generate.load(model_folder(Path(model_path)))
    return {generate.CARD_GRID: generate.card_grid(model)} if model.encoder.config.encoder == "text" else {}


def write(model_path: Path, dest: Path | None = None) -> Path:
    """Render the card and write it atomically to `dest` (default: MODEL_CARD.md in the model folder), with the
    sample grid it links beside it."""
    dest = Path(dest) if dest else model_folder(Path(model_path)) / CARD
    text = render(model_path)
    for name, content in sample_files(model_path).items():
        write_bytes_atomic(content, dest.with_name(name))
    write_text_atomic(text, dest)
    return dest


def release_files(model_path: Path) -> dict[str, bytes]:
    """What ships beside exported weights: the card, the sample grid it links and the model license, by file name."""
    return {CARD: render(model_path).encode("utf-8"), **sample_files(model_path),
            LICENSE_FILE: MODEL_LICENSE.read_bytes()}


def _model_card(args: argparse.Namespace) -> int:
    print(write(Path(args.model), Path(args.out) if args.out else None))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser("model-card")  # its help line is in audit.cli.COMMANDS
    command.add_argument("model", help="the model folder (diffusion/final) or the training run folder holding it")
    command.add_argument("--out", help=f"where to write the card (default: {CARD} in the model folder)")
    command.set_defaults(handler=_model_card)
