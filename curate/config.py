"""Typed, validated configuration: source manifests and pipelines.

A *manifest* (``manifests/<source>.yaml``) declares one source: its adapter and the
adapter's options (checked against the adapter's ``Options`` model), where its metadata
lives, fetch politeness and the attribution template. A *pipeline* (``pipelines/*.yaml``)
names the sources to run, the license policy, filter thresholds and shard settings. Both are validated at load, with
errors that name the file and the field; the resolved pipeline is saved as
``OUT/run.yaml`` beside every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from curate import data, permissions, stages, templates
from curate.captioners.config import CaptionConfig
from curate.dedup import NearDedupConfig
from curate.fetch import FetchSettings
from curate.harvest.settings import HarvestSettings
from curate.licenses import LicenseFileError
from curate.score.filter import ScoringConfig
from curate.sources import ADAPTERS, options_model

MANIFESTS_DIR = data.MANIFESTS
LICENSES_DIR = data.LICENSES
PIPELINES_DIR = data.PIPELINES


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Manifest(Strict):
    source: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$",
                        description="The source's short name, part of every record key of the source.")
    name: str = Field(description="The source's full name: `{source_name}` in attribution lines, the cards.")
    adapter: str = Field(description="The adapter that reads the metadata (`curate/sources/<adapter>.py`).")
    metadata: list[str] = Field(default_factory=list, description=(
        "Files or folders the adapter reads: paths or globs, relative to the manifest."))
    permissions: list[str] = Field(default_factory=list, description=(
        "Permission files (licenses/permissions/<name>.yaml, or paths) covering this source's records."))
    options: dict[str, Any] = Field(default_factory=dict, description="The adapter's own options.")
    fetch: dict[str, Any] = Field(default_factory=dict, description=(
        "This source's fetch settings, over the pipeline's top-level `fetch`."))
    harvest: HarvestSettings = Field(HarvestSettings(), description="How `cleanroom sources pull` asks its API.")
    attribution: str = Field("{title} by {creator}, {source_name}, {license_name}", description=(
        "Each record's attribution line: a template of record fields, `[optional parts]` vanish when empty."))

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str) -> str:
        if value not in ADAPTERS:
            raise ValueError(f"unknown adapter {value!r}; known: {', '.join(sorted(ADAPTERS))}")
        return value

    @field_validator("options")
    @classmethod
    def _options_known(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "adapter" in info.data:  # else the adapter's own error says why
            try:
                options_model(info.data["adapter"]).model_validate(value)
            except ValidationError as e:
                problems = "; ".join(f"{_dotted(err['loc'])}: {err['msg']}" for err in e.errors())
                raise PydanticCustomError("adapter_options", "{problems}", {"problems": problems}) from None
        return value

    @field_validator("attribution")
    @classmethod
    def _attribution_parses(cls, value: str) -> str:
        templates.parse(value)  # a bad template stops the run here, not at the first record
        return value


class SourceEntry(Strict):
    """One source in a pipeline: a manifest plus pipeline-level overrides."""

    manifest: str = Field(description="A bundled manifest's name (`met`, `local`) or a path from the pipeline file.")
    metadata: list[str] | None = Field(None, description=(
        "Replaces the manifest's `metadata`; paths or globs relative to the pipeline file."))
    options: dict[str, Any] = Field(default_factory=dict, description="Over the manifest's `options`, key by key.")
    fetch: dict[str, Any] = Field(default_factory=dict, description=(
        "Over the manifest's and the pipeline's `fetch`, key by key."))


class Dedup(Strict):
    exact: bool = Field(True, description="Records whose original bytes have the same sha256 are one image.")
    near: NearDedupConfig = Field(NearDedupConfig(), description=(
        "pHash and CLIP-embedding dedup; both need a `scoring` section."))


class Shards(Strict):
    samples_per_shard: int = Field(default=1000, ge=1, description="Kept samples per webdataset tar.")


class Demo(Strict):
    """An offline corpus generated into the run folder and served on loopback."""

    images: int = Field(default=24, ge=8, description="Good images generated, shared by the demo's three sources.")
    seed: int = Field(0, description="Seed of the generated pictures.")
    head_dim: int = Field(default=32, ge=1, description=(
        "Embedding width of the demo's CLIP (cleanroom-tiny-clip)."))


# The stages that hold a model, each run by Ray Data as a pool of actors that load it once
# (``score``: the CLIP embedder and the watermark detector, which share each decoded image).
MODEL_STAGES = ("score", "captioner", "similarity")


class ActorResources(Strict):
    """One model stage's actors; what is left out is derived from the cluster (``curate.run.actor_resources``)."""

    min_actors: int | None = Field(default=None, ge=1, description="Actors the pool starts with.")
    max_actors: int | None = Field(default=None, ge=1, description="Actors the pool may grow to.")
    num_cpus: float | None = Field(default=None, gt=0, description="CPUs per actor.")
    num_gpus: float | None = Field(default=None, ge=0, description="GPUs per actor; a fraction shares one GPU.")

    @model_validator(mode="after")
    def _ordered(self) -> "ActorResources":
        if self.min_actors and self.max_actors and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) is above max_actors ({self.max_actors})")
        return self


class RayConfig(Strict):
    """Where and with what the run executes; not part of a run's identity (a resumed run may change it)."""

    num_cpus: int | None = Field(None, description="CPUs of a local Ray (not a cluster's); none: all cores.")
    stages: dict[Literal[MODEL_STAGES], ActorResources] = Field(default_factory=dict, description=(
        "Actor pool of each model stage."))


class ResolvedSource(Strict):
    """A source as the run uses it: manifest merged with the pipeline's overrides."""

    source: str
    name: str
    adapter: str
    metadata: list[str]  # absolute paths or globs
    options: dict[str, Any]  # as written (run variables filled in), checked against the adapter's Options
    fetch: FetchSettings
    attribution: str
    permissions: list[str] = []  # absolute paths of permission files, checked when the pipeline resolves
    priority: int  # position in the pipeline: lower is preferred when duplicates meet


class Pipeline(Strict):
    name: str = Field(description="The pipeline's name, as the model card names the run.")
    policy: str = Field("default", description=(
        "A license policy: a name under licenses/ (policy-<name>.yaml) or a path."))
    sources: list[SourceEntry] = Field(min_length=1, description=(
        "The sources; of duplicates with equal license rank and size, dedup keeps the earlier source's."))
    fetch: dict[str, Any] = Field(default_factory=dict, description=(
        "Fetch settings for every source, under each manifest's own `fetch`."))
    filters: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: {} for name in stages.BUILT_IN}, validate_default=True, description=(
            "Record filters by name or import path (module:Class), run in this order after fetch, each with its "
            "settings; without a `filters` section, every built-in one with its defaults."))
    dedup: Dedup = Field(Dedup(), description="Exact and near duplicate removal.")
    scoring: ScoringConfig | None = Field(None, description=(
        "CLIP embeddings and the heads on them; none skips the stage."))
    captions: CaptionConfig = Field(CaptionConfig(), description=(
        "Which captions each record gets, and which is KEY.txt."))
    shards: Shards = Field(Shards(), description="The webdataset shards.")
    demo: Demo | None = Field(None, description="Generate and serve the offline demo corpus (the demo pipeline only).")
    ray: RayConfig = Field(RayConfig(), description="Ray resources; not part of a run's identity.")

    @model_validator(mode="after")
    def _fetch_fields_known(self) -> "Pipeline":
        FetchSettings(**self.fetch)
        return self

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return stages.validate_filters(value)

    @model_validator(mode="after")
    def _near_dedup_needs_scoring(self) -> "Pipeline":
        # Hashes and embeddings are made in the scoring stage, the one place images are decoded.
        near = self.dedup.near
        if (near.phash or near.clip) and self.scoring is None:
            raise ValueError("dedup.near needs a scoring section (it reads the hashes and embeddings scoring makes)")
        return self


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate(model: type[BaseModel], data: Any, path: Path | str) -> Any:
    """``model`` from ``data``; every problem is reported with its dotted field, after the file name."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def load_manifest(path: Path) -> Manifest:
    return validate(Manifest, load_yaml(path), path)


def load_pipeline(path: Path) -> Pipeline:
    return validate(Pipeline, load_yaml(path), path)


def _bare(reference: str) -> bool:
    """A name (``met``), not a path (``met.yaml``, ``./met.yaml``, ``manifests/met.yaml``)."""
    return "/" not in reference and not reference.endswith((".yaml", ".yml"))


def manifest_path(reference: str, base: Path) -> Path:
    """A bare name (``met``) means the bundled ``manifests/met.yaml``; else a path from ``base``."""
    if _bare(reference):
        return MANIFESTS_DIR / f"{reference}.yaml"
    return (base / reference).resolve()


def policy_path(reference: str, base: Path) -> Path:
    if _bare(reference):
        return LICENSES_DIR / f"policy-{reference}.yaml"
    return (base / reference).resolve()


def pipeline_path(reference: str) -> Path:
    """A bare name (``demo``) means the bundled ``pipelines/demo.yaml``; else a path (from the working directory)."""
    if not _bare(reference):
        return Path(reference)
    path = PIPELINES_DIR / f"{reference}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml")))
        raise ConfigError(f"no bundled pipeline named {reference!r} (bundled: {known}); give a path to a pipeline file")
    return path


def _expand(value: Any, variables: dict[str, str], where: str) -> Any:
    """Fill run variables (``{out}``, ``{demo_url}``) into a path or an option string."""
    if isinstance(value, dict):
        return {k: _expand(v, variables, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, variables, where) for v in value]
    if not isinstance(value, str):
        return value
    try:
        return value.format_map(variables)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}: {value!r} names an unknown run variable {e}; "
                          f"known: {', '.join('{' + k + '}' for k in variables)}") from None


def resolve_sources(pipeline: Pipeline, pipeline_file: Path, variables: dict[str, str]) -> list[ResolvedSource]:
    base = pipeline_file.resolve().parent
    resolved = []
    for priority, entry in enumerate(pipeline.sources):
        path = manifest_path(entry.manifest, base)
        manifest = load_manifest(path)
        where = f"{pipeline_file}: sources[{priority}]"
        if entry.metadata is not None:
            metadata = [str((base / m).resolve()) for m in _expand(entry.metadata, variables, where)]
        else:
            metadata = [str((path.parent / m).resolve()) for m in _expand(manifest.metadata, variables, str(path))]
        if not metadata:
            raise ConfigError(f"{pipeline_file}: sources[{priority}] ({manifest.source}): no metadata given "
                              f"in the pipeline or in {path}")
        fetch = {**pipeline.fetch, **manifest.fetch, **entry.fetch}
        try:
            settings = FetchSettings(**fetch)
        except ValidationError as e:
            raise ConfigError(f"{pipeline_file}: sources[{priority}] ({manifest.source}) fetch: {e}") from None
        resolved.append(ResolvedSource(
            source=manifest.source, name=manifest.name, adapter=manifest.adapter, metadata=metadata,
            options=_source_options(manifest, entry, where, variables),
            fetch=settings, attribution=manifest.attribution, priority=priority,
            permissions=_permission_files(manifest, path),
        ))
    names = [s.source for s in resolved]
    if len(set(names)) != len(names):
        raise ConfigError(f"{pipeline_file}: a source appears twice in sources: {names}")
    return resolved


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _source_options(manifest: Manifest, entry: SourceEntry, where: str, variables: dict[str, str]) -> dict[str, Any]:
    """The manifest's options with the pipeline's over them, checked against the adapter's model (the
    manifest's own were checked when it loaded), so a misspelt option stops the run before it starts."""
    options = _expand({**manifest.options, **entry.options}, variables, where)
    try:
        options_model(manifest.adapter).model_validate(options)
    except ValidationError as e:
        problems = "; ".join(f"options.{_dotted(err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{where} ({manifest.source}): {problems}") from None
    return options


def _permission_files(manifest: Manifest, path: Path) -> list[str]:
    files = []
    for i, reference in enumerate(manifest.permissions):
        file = permissions.path_of(reference, path.parent)
        if not file.is_file():
            raise ConfigError(f"{path}: permissions[{i}]: {file} does not exist")
        try:
            permissions.load(file, manifest.source)
        except LicenseFileError as e:
            raise ConfigError(str(e)) from None
        files.append(str(file))
    return files


class RunConfig(Strict):
    """Everything a run needs, resolved: what ``OUT/run.yaml`` holds."""

    pipeline_file: str
    pipeline: Pipeline
    policy_file: str
    sources: list[ResolvedSource]
    mode: Literal["local", "cluster"] = "local"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _fill(value: Any, variables: dict[str, str]) -> Any:
    """Put run variables into every string of a pipeline; other braces (templates) are left alone."""
    if isinstance(value, dict):
        return {k: _fill(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, variables) for v in value]
    if isinstance(value, str):
        for name, replacement in variables.items():
            value = value.replace("{" + name + "}", replacement)
    return value


def resolve(pipeline_file: Path, variables: dict[str, str]) -> RunConfig:
    pipeline = validate(Pipeline, _fill(load_yaml(pipeline_file), variables), pipeline_file)
    if pipeline.dedup.near.clip:
        for earlier in pipeline.dedup.near.clip.against:  # paths in a pipeline are relative to its file
            earlier.out = str((pipeline_file.resolve().parent / earlier.out).resolve())
    policy = policy_path(pipeline.policy, pipeline_file.resolve().parent)
    if not policy.exists():
        raise ConfigError(f"{pipeline_file}: policy: {policy} does not exist")
    return RunConfig(pipeline_file=str(pipeline_file.resolve()), pipeline=pipeline, policy_file=str(policy),
                     sources=resolve_sources(pipeline, pipeline_file, variables))
