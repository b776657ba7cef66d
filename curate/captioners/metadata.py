"""Metadata captions: a record's title, creator, date and descriptive ``meta`` fields as text.

Each adapter puts its own keys into ``meta``. A per-adapter field map names, for each
caption field (``medium``, ``culture``, ``description``, ...), the keys that fill it in
order; templates (``curate.templates``: ``[optional]`` parts vanish with their
punctuation) turn the fields into a caption. A pipeline can override both per source.

Values are cleaned before any template sees them: HTML stripped, whitespace collapsed,
placeholders ("Unknown", "n.d.", "Untitled", camera file names) dropped, timestamps cut
to their date, and a field that repeats an earlier one (a title that is also the
description) dropped. A multilingual description (``{"en": .., "de": ..}``, from Commons)
gives one caption per language, tagged with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from curate import templates
from curate.captioners import text as captext
from curate.captioners.config import MetadataCaptions

ORIGIN = "metadata"

# Caption fields in the order duplicates are judged: a later field equal to an earlier one goes.
FIELDS = ("title", "creator", "date", "medium", "classification", "culture", "place", "description")
_TOP_LEVEL = ("title", "creator", "date")  # record columns; everything else comes from ``meta``
# Keys whose text is not CC0 (AIC's description is CC BY 4.0): see MetadataCaptions.include_cc_by_description.
CC_BY_KEYS = frozenset({"description_cc_by"})
# Museums capitalise these as stand-alone labels ("Oil on canvas"); after a comma they read lower-case.
_LOWER_FIRST = frozenset({"medium", "classification"})
# "Kart over Hölen, 1871" dated 1871, or a description that is a piece of the title: said once.
_IN_TITLE = frozenset({"date", "description"})
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_NOT_WORD = re.compile(r"\W+")

_FALLBACK = ("{description}[, by {creator}][, {date}]", "{medium}[, by {creator}][, {date}]", "{creator}[, {date}]")
# With a creator, the creator says who; without one, the culture or origin says where from.
MUSEUM = ("{title}[, {medium}], by {creator}[, {date}][. {description}]",
          "{title}[, {medium}][, {culture}][, {date}][. {description}]", *_FALLBACK)
WEB = ("{title}[, by {creator}][, {date}][. {description}]", *_FALLBACK)
SMITHSONIAN = ("{title}[ ({common_name})], by {creator}[, {date}][, {place}][. {description}]",
               "{title}[ ({common_name})][, {culture}][, {date}][, {place}][. {description}]", *_FALLBACK)


@dataclass(frozen=True)
class Defaults:
    fields: Mapping[str, tuple[str, ...]]
    templates: tuple[str, ...]


# ``medium`` falls back to the classification where a record has no medium: it says what the
# object is. Cleveland's descriptions (wall, digital) are curatorial prose about history, not
# what the image shows, so they stay out by default; NGA's assistive text is written to
# describe the image and goes in.
ADAPTER_DEFAULTS: dict[str, Defaults] = {
    "met": Defaults({"medium": ("medium", "objectName", "classification"), "classification": ("classification",),
                     "culture": ("culture",)}, MUSEUM),
    "aic": Defaults({"medium": ("medium", "artwork_type"), "classification": ("classification", "artwork_type"),
                     "culture": ("place_of_origin",)}, MUSEUM),
    "cleveland": Defaults({"medium": ("technique", "type"), "classification": ("type",), "culture": ("culture",)},
                          MUSEUM),
    "nga": Defaults({"medium": ("medium", "classification"), "classification": ("classification",),
                     "description": ("assistivetext",)}, MUSEUM),
    "smithsonian": Defaults({"classification": ("object_type",), "culture": ("culture",), "place": ("place",),
                             "description": ("description",)}, SMITHSONIAN),
    "commons": Defaults({"description": ("description",)}, WEB),
    "flickr": Defaults({"description": ("description",)}, WEB),
    "finna": Defaults({"description": ("summary",)}, WEB),
    "local": Defaults({"description": ("description",), "medium": ("medium",), "culture": ("culture",)}, WEB),
}
GENERIC = Defaults({name: (name,) for name in FIELDS if name not in _TOP_LEVEL}, WEB)


def _norm(value: str) -> str:
    return _NOT_WORD.sub("", value.casefold())


def _capitalised(text: str) -> str:
    """The first letter upper-case ("mask, Japan" -> "Mask, Japan"); "iPhone case" stays as it is."""
    if text[:1].islower() and not text[1:2].isupper():
        return text[0].upper() + text[1:]
    return text


class MetadataTemplates:
    """Record -> its metadata captions, with the pipeline's templates and cleaning rules."""

    def __init__(self, settings: MetadataCaptions, max_chars: int, adapters: Mapping[str, str] | None = None):
        """``adapters`` maps source names to adapter names; None when they are the same (bundled manifests)."""
        unknown = sorted(set(settings.sources) - set(adapters)) if adapters is not None else []
        if unknown:
            raise ValueError(f"captions.metadata.sources names {unknown}, not sources of this pipeline "
                             f"({', '.join(sorted(adapters))})")
        self.settings = settings
        self.max_chars = max_chars
        self.adapters = adapters
        self.placeholders = frozenset(_norm(p) for p in settings.placeholders)
        self.patterns = [re.compile(p) for p in settings.placeholder_patterns]
        self._specs: dict[str, Defaults] = {}

    def spec(self, source: str) -> Defaults:
        if source not in self._specs:
            adapter = self.adapters.get(source, source) if self.adapters is not None else source
            base = ADAPTER_DEFAULTS.get(adapter, GENERIC)
            override = self.settings.sources.get(source)
            fields = dict(base.fields)
            if self.settings.include_cc_by_description:
                fields["description"] = (*fields.get("description", ()), *sorted(CC_BY_KEYS))
            if override:
                fields.update({k: tuple(v) for k, v in override.fields.items()})
            chosen = tuple(override.templates) if override and override.templates else base.templates
            self._specs[source] = Defaults(fields, chosen)
        return self._specs[source]

    # ------------------------------------------------------------------ values

    def placeholder(self, value: str) -> bool:
        return _norm(value) in self.placeholders or not _norm(value) \
            or any(p.fullmatch(value) for p in self.patterns)

    def clean(self, name: str, value: Any) -> str | dict[str, str] | None:
        """A field value as caption text; a multilingual dict stays a dict of cleaned texts."""
        if isinstance(value, dict):
            texts = {lang: self.clean(name, v) for lang, v in value.items() if not str(lang).startswith("_")}
            return {lang: t for lang, t in texts.items() if isinstance(t, str)} or None
        if isinstance(value, list):
            parts = [p for p in (self.clean(name, v) for v in value) if isinstance(p, str)]
            # Prose (Finna's summary paragraphs) runs on; labels are a list.
            return (" " if name == "description" else ", ").join(dict.fromkeys(parts)) or None
        if isinstance(value, bool) or value is None:
            return None
        text = captext.plain(value)
        if not text or self.placeholder(text):
            return None
        if name == "date":
            text = _TIMESTAMP.sub(r"\1", text)
        if name in _LOWER_FIRST and text[:1].isupper() and text[1:2].islower():
            text = text[0].lower() + text[1:]
        return text

    def fields(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The record's caption fields: mapped fields, plus every other ``meta`` key under its own name."""
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        if not self.settings.include_cc_by_description:
            meta = {k: v for k, v in meta.items() if k not in CC_BY_KEYS}
        raw = {**meta, **{name: row.get(name) for name in _TOP_LEVEL}}
        mapping = self.spec(row["source"]).fields
        # Canonical names are filled only through the map: a source's own ``description``
        # key is not a caption description unless the map says so.
        view = {k: self.clean(k, v) for k, v in raw.items() if k not in FIELDS}
        for name in _TOP_LEVEL:
            view[name] = self.clean(name, raw[name])
        for name, keys in mapping.items():
            view[name] = next((v for v in (self.clean(name, raw.get(k)) for k in keys) if v), None)
        return self._drop_repeats(view)

    @staticmethod
    def _drop_repeats(view: dict[str, Any]) -> dict[str, Any]:
        """Drop a field equal to an earlier one, and a date or description the title already says."""
        seen: set[str] = set()
        title = _norm(view["title"]) if isinstance(view.get("title"), str) else ""

        def repeats(name: str, value: str) -> bool:
            return _norm(value) in seen or (name in _IN_TITLE and _norm(value) in title)

        for name in FIELDS:
            value = view.get(name)
            if isinstance(value, dict):
                view[name] = {lang: t for lang, t in value.items() if not repeats(name, t)} or None
            elif isinstance(value, str):
                view[name] = None if repeats(name, value) else value
                seen.add(_norm(value))
        return view

    def language_views(self, view: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str | None]]:
        """The view once per description language (preferred first), or once when it has none."""
        others = {k: self._preferred(v) if isinstance(v, dict) and k != "description" else v
                  for k, v in view.items()}
        described = view.get("description")
        if not isinstance(described, dict):
            yield others, None
            return
        order = [lang for lang in self.settings.languages if lang in described]
        order += [lang for lang in described if lang not in order]
        for lang in order if self.settings.all_languages else order[:1]:
            yield {**others, "description": described[lang]}, lang

    def _preferred(self, texts: dict[str, str]) -> str:
        return next((texts[lang] for lang in self.settings.languages if lang in texts), next(iter(texts.values())))

    # ------------------------------------------------------------------ captions

    def render(self, view: Mapping[str, Any], template_list: tuple[str, ...]) -> tuple[str, str] | None:
        """(caption, template) of the first template the view fills, finished; None when none does."""
        for template in template_list:
            filled = templates.render(template, view)
            text = captext.finish(filled, self.max_chars) if filled else None
            if text:
                return _capitalised(text), template
        return None

    def captions(self, source: str, fields: dict[str, Any]) -> list[dict[str, str]]:
        """Every metadata caption of a record of ``source`` with these ``fields``: one, or one per
        description language."""
        chosen = self.spec(source).templates
        found: dict[str, dict[str, str]] = {}
        for view, lang in self.language_views(fields):
            rendered = self.render(view, chosen)
            if rendered and rendered[0] not in found:
                text, template = rendered
                # The language tag belongs to the description: only a caption that shows it carries it.
                shows = lang and templates.render(template, {**view, "description": None}) != \
                    templates.render(template, view)
                found[text] = captext.entry(text, ORIGIN, lang=lang if shows else None)
        return list(found.values())
