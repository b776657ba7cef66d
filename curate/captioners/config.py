"""The ``captions:`` section of a pipeline, validated at load.

Which captions a record gets (``metadata`` from its descriptive fields, ``model`` from
open_clip CoCa, ``combined``: the model caption plus who and when), which one becomes
``KEY.txt`` (``choose``), and the optional CLIP image-text similarity filter on it.
Every caption made is kept in the record's ``captions`` list with its origin.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from curate import templates
from curate.stages import imported_class, settings_error
from curate.score.clip import ClipSpec

Origin = Literal["metadata", "model", "combined"]


# Values that stand for "no value": a caption must never say them. Compared on letters and
# digits only, case-folded, so "[Unknown]", "N.D." and "(untitled)" match too.
# "Untitled" is here on purpose: it says nothing about the image, and a caption
# "Untitled, by X" teaches a model the word; the templates then fall back to medium or
# description. "Anonymous" is not: it is a museum's attribution and reads naturally.
DEFAULT_PLACEHOLDERS = (
    "none", "null", "nan", "n/a", "na", "unknown", "unknown artist", "unknown maker", "unknown author",
    "unidentified artist", "n.d", "nd", "s.d", "undated", "no date", "not dated", "date unknown",
    "untitled", "no title", "title unknown", "ohne titel", "sans titre", "senza titolo", "nimetön",
)
# Camera file names are what many photo sites show as a title when the uploader gave none.
DEFAULT_PLACEHOLDER_PATTERNS = (r"(?i)(img|dsc|dscn|dscf|dcim|pict|pic|photo|image|p)[-_ ]?\d{3,}",)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def check_template(template: str) -> str:
    """A template the renderer can use (``curate.templates`` grammar) that names at least one field."""
    if not templates.parse(template).fields:
        raise ValueError(f"template {template!r} names no {{field}}")
    return template


def required_fields(template: str) -> set[str]:
    """Fields outside every [optional] part: the template renders nothing without them."""
    return templates.parse(template).required


class SourceCaptions(Strict):
    """Overrides for one source (keyed by its name in the pipeline's ``sources``)."""

    templates: list[str] | None = Field(default=None, min_length=1, description=(
        "Replace the adapter's default templates; tried in order, the first whose required fields the record "
        "has wins."))
    fields: dict[str, list[str]] = Field(default_factory=dict, description=(
        "Caption field -> record or `meta` keys tried in order, merged over the adapter's defaults, e.g. "
        "`{description: [wall_description]}` for Cleveland."))

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else [check_template(t) for t in value]

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, keys in value.items():
            if not name.isidentifier() or not keys:
                raise ValueError(f"fields.{name}: a field name maps to a non-empty list of record/meta keys")
        return value


class MetadataCaptions(Strict):
    sources: dict[str, SourceCaptions] = Field(default_factory=dict, description=(
        "Per source; sources not named here use their adapter's defaults (curate.captioners.metadata)."))
    languages: list[str] = Field(default_factory=lambda: ["en"], description=(
        "A multilingual description ({\"en\": .., \"fi\": ..}) gives one caption per language, in this order "
        "of preference first; the first is the one `choose` can pick."))
    all_languages: bool = Field(True, description="false: only the preferred language's caption.")
    placeholders: list[str] = Field(default_factory=lambda: list(DEFAULT_PLACEHOLDERS), description=(
        "Values that stand for no value (compared on letters and digits, case-folded): never in a caption."))
    placeholder_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_PLACEHOLDER_PATTERNS),
                                            description="Regular expressions a whole placeholder value matches.")
    # AIC publishes its data as CC0 except ``description``, which is CC BY 4.0. A caption
    # built from it carries CC BY text into the shards and the model's training data, which
    # then owe AIC attribution; so it stays out unless the pipeline says so here.
    include_cc_by_description: bool = Field(False, description=(
        "Caption from AIC's `description`, which is CC BY 4.0 (the rest of AIC's data is CC0)."))

    @field_validator("placeholder_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"placeholder pattern {pattern!r}: {e}") from None
        return value


# The options only one generation type reads; the rest (seq_len, min_seq_len,
# repetition_penalty) apply to all three.
_OPTIONS_BY_TYPE = {
    "beam_search": {"num_beams", "num_beam_groups"},
    "top_k": {"top_k", "temperature", "max_seq_len", "seed"},
    "top_p": {"top_p", "temperature", "max_seq_len", "seed"},
}


class DecodingOptions(Strict):
    """open_clip ``CoCa.generate`` options; only those of the chosen generation type may be set.

    Not exposed: ``fixed_output_length`` (pads the token tensor, the decoded text is the
    same), token ids (fixed by the tokenizer), ``text`` (a sampling prompt) and
    ``stopping_criteria`` (objects, not config).
    """

    generation_type: Literal["beam_search", "top_k", "top_p"] = Field("beam_search", description=(
        "beam_search is deterministic (diverse beam search when num_beam_groups > 1); top_k and top_p sample."))
    seq_len: int = Field(default=30, ge=2, le=77, description=(
        "Tokens generated, start token included; 77 is CLIP's context."))
    min_seq_len: int = Field(default=5, ge=0, description="Tokens generated at least.")
    repetition_penalty: float = Field(default=1.0, gt=0, description="Above 1 discourages repeated tokens.")
    num_beams: int = Field(default=6, ge=2, description="beam_search only: beams, a multiple of num_beam_groups.")
    num_beam_groups: int = Field(default=3, ge=1, description="beam_search only: groups of diverse beams.")
    top_k: int = Field(default=1, ge=1, description="top_k only: tokens sampled from; 1 is greedy decoding.")
    top_p: float = Field(default=0.1, gt=0, le=1, description="top_p only: probability mass sampled from.")
    temperature: float = Field(default=1.0, gt=0, description="top_k and top_p only: sampling temperature.")
    max_seq_len: int = Field(default=77, ge=1, description=(
        "top_k and top_p only: the decoder's window over the tokens so far."))
    seed: int = Field(0, description="top_k and top_p only: each record samples from a generator seeded by "
                                     "(seed, record key).")

    @model_validator(mode="after")
    def _consistent(self) -> "DecodingOptions":
        if self.seq_len <= self.min_seq_len:
            raise ValueError(f"seq_len ({self.seq_len}) must be larger than min_seq_len ({self.min_seq_len})")
        own = _OPTIONS_BY_TYPE[self.generation_type]
        # Compared with the defaults, not with what was set: a dumped config (OUT/run.yaml) sets
        # every field, and must validate again.
        foreign = sorted(name for name in set().union(*_OPTIONS_BY_TYPE.values()) - own
                         if getattr(self, name) != type(self).model_fields[name].default)
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not used by generation_type {self.generation_type}")
        if self.generation_type == "beam_search" and self.num_beams % self.num_beam_groups:
            raise ValueError(f"num_beams ({self.num_beams}) must be a multiple of num_beam_groups "
                             f"({self.num_beam_groups})")
        return self

    def generate_kwargs(self) -> dict:
        """Keyword arguments for ``CoCa.generate`` (the seed is applied by the caller)."""
        shared = {"generation_type": self.generation_type, "seq_len": self.seq_len,
                  "min_seq_len": self.min_seq_len, "repetition_penalty": self.repetition_penalty}
        own = _OPTIONS_BY_TYPE[self.generation_type] - {"seed"}
        return {**shared, **{name: getattr(self, name) for name in sorted(own)}}

    @property
    def samples(self) -> bool:
        return self.generation_type != "beam_search"


class CaptionerSettings(Strict):
    """What every captioner's settings have; a captioner kind's own model adds the rest.

    A captioner is a class, run as a Ray actor: ``__init__(captions: CaptionConfig)`` loads its
    model once, ``__call__(table) -> table`` adds a caption of origin ``model`` to each pending
    record's ``captions`` (``curate.captioners.text``). It declares ``kind`` and ``Settings``
    and is registered with ``register_captioner``, or named by import path as its ``kind``.
    """

    kind: str = Field(description="A registered captioner kind, or an import path (module:Class).")
    batch_size: int = Field(default=16, ge=1, description="Images per model call.")

    def describe(self) -> str:
        """The model's name as every caption it makes records it."""
        raise NotImplementedError


class ModelCaptions(CaptionerSettings):
    """open_clip CoCa (``kind: coca``, ``curate.captioners.coca``)."""

    kind: Literal["coca"] = Field("coca", description="The default kind.")
    model: ClipSpec = Field(description=(
        "A CoCa model: an open_clip name + pretrained tag (coca_ViT-L-14 / mscoco_finetuned_laion2b_s13b_b90k), "
        "or a local checkpoint, or a registered tiny config."))
    decoding: DecodingOptions = Field(DecodingOptions(), description="How captions are generated.")

    def describe(self) -> str:
        return self.model.describe()


CAPTIONERS: dict[str, type] = {}
# The package's own captioners, imported (and so registered) when a pipeline first names them.
BUILT_IN_CAPTIONERS = {"coca": "curate.captioners.coca:CocaCaptioner"}


def register_captioner(cls: type) -> type:
    """Make ``cls`` a captioner pipelines can name as ``captioner: {kind: ...}``."""
    if CAPTIONERS.get(cls.kind, cls) is not cls:
        raise ValueError(f"captioner kind {cls.kind!r} is taken by {CAPTIONERS[cls.kind].__module__}")
    if not (isinstance(getattr(cls, "kind", None), str) and issubclass(getattr(cls, "Settings", object),
                                                                        CaptionerSettings)):
        raise ValueError(f"{cls.__qualname__} needs a kind and a Settings subclassing "
                         "curate.captioners.config.CaptionerSettings")
    CAPTIONERS[cls.kind] = cls
    return cls


def captioner_class(kind: str) -> type:
    """A registered captioner by kind, or one named by import path (``module:Class``)."""
    if kind in CAPTIONERS:
        return CAPTIONERS[kind]
    path = BUILT_IN_CAPTIONERS.get(kind, kind)
    if ":" not in path:
        raise ValueError(f"unknown captioner kind {kind!r}; known: "
                         f"{', '.join(sorted({*CAPTIONERS, *BUILT_IN_CAPTIONERS}))} (or module:Class)")
    cls = imported_class(path, object)
    return register_captioner(cls) if CAPTIONERS.get(cls.kind) is not cls else cls


class SimilarityFilter(Strict):
    """Reject records whose chosen caption scores below ``threshold`` against the image."""

    # LAION-400M kept pairs with cosine >= 0.28 under OpenAI's ViT-B/32; the number
    # belongs to that model, so change both together.
    model: ClipSpec = Field(ClipSpec(model="ViT-B-32", pretrained="openai"), description=(
        "The CLIP model that embeds image and caption."))
    threshold: float = Field(default=0.28, ge=-1.0, le=1.0, description=(
        "Cosine similarity below which a record is rejected; it belongs to `model`: change both together."))
    batch_size: int = Field(default=64, ge=1, description="Records per model call.")


class CaptionConfig(Strict):
    choose: list[Origin] = Field(default_factory=lambda: ["metadata"], min_length=1, description=(
        "Origins tried in order for KEY.txt: the first the record has wins. Every caption made is kept in "
        "KEY.json's `captions` whichever is chosen."))
    metadata: MetadataCaptions = Field(MetadataCaptions(), description="Captions from the record's own fields.")
    captioner: SerializeAsAny[CaptionerSettings] | None = Field(None, description=(
        "The model behind \"model\" and \"combined\" captions; `kind` picks the captioner (default coca)."))
    combined_template: str = Field("{model}[, by {creator}][, {date}]", description=(
        "The combined caption: the model's words plus the record's fields."))
    # CLIP reads 77 tokens; ~200 characters of English stay well inside them.
    max_chars: int = Field(default=200, ge=20, description=(
        "Longer captions are cut at a sentence end (else a word end) before this."))
    similarity: SimilarityFilter | None = Field(None, description=(
        "Reject records whose chosen caption and image disagree under CLIP; none: off."))

    @field_validator("captioner", mode="before")
    @classmethod
    def _captioner_of_its_kind(cls, value: object) -> object:
        if isinstance(value, dict):
            kind = value.get("kind", "coca")
            settings = captioner_class(kind).Settings
            try:
                return settings.model_validate({**value, "kind": kind})
            except ValidationError as e:
                raise settings_error("captioner", e) from None
        return value

    @field_validator("choose")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"an origin appears twice: {value}")
        return value

    @field_validator("combined_template")
    @classmethod
    def _combined_has_model(cls, value: str) -> str:
        check_template(value)
        if "model" not in required_fields(value):
            raise ValueError(f"combined_template {value!r} must contain {{model}} outside [optional] parts")
        return value

    @model_validator(mode="after")
    def _model_when_needed(self) -> "CaptionConfig":
        needs = [o for o in self.choose if o in ("model", "combined")]
        if needs and self.captioner is None:
            raise ValueError(f"choose names {', '.join(needs)} but no captioner: is configured")
        return self
