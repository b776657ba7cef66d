"""``docs/pipeline-reference.md``, generated from the config models: ``python -m curate.reference > FILE``.

Every field of a pipeline and of a source manifest, with its type, default and description, comes
from the pydantic models that validate them (``Field(description=...)``; an adapter's options
from its module docstring's ``Options:`` list where a field has no description), so the page
cannot drift from what a run accepts; ``tests/test_reference.py`` checks the committed page is current.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import curate
from curate import config, stages
from curate.captioners.config import BUILT_IN_CAPTIONERS, CaptionerSettings, captioner_class
from curate.fetch import FetchSettings
from curate.sources import ADAPTERS, options_model

PACKAGE_ROOT = Path(curate.__file__).resolve().parent.parent
PRECEDENCE_ANCHOR = "precedence"
COMMAND = "python -m curate.reference > docs/pipeline-reference.md"

# Fields whose YAML is a mapping checked by another model than their annotation says: the
# section that documents what goes inside, and how the type column names it.
CHECKED_BY = {(config.Pipeline, "fetch"): FetchSettings, (config.SourceEntry, "fetch"): FetchSettings,
              (config.Manifest, "fetch"): FetchSettings}
CONTENTS = {**{key: f"[{model.__name__}](#fetchsettings) fields, combined as [above](#{PRECEDENCE_ANCHOR})"
               for key, model in CHECKED_BY.items()},
            (config.Pipeline, "filters"): "[filters](#filters) and their settings",
            (config.Manifest, "options"): "the adapter's [options](#adapter-options)",
            (config.SourceEntry, "options"): "the adapter's [options](#adapter-options)"}

PRECEDENCE = """\
## How manifest and pipeline settings combine

A pipeline names each source by its manifest (`sources: [{manifest: met}]`); the source the run
uses is that manifest with the pipeline's settings over it (`curate.config.resolve_sources`), key
by key (a key set at a later level replaces the earlier value whole; mappings are not merged
deeper):

- **`fetch`**: the pipeline's top-level `fetch:`, then the manifest's `fetch:`, then the
  source entry's `fetch:`; the later wins. So a manifest's `fetch` overrides the pipeline's
  top-level `fetch` for every key the manifest sets, without a warning: the bundled manifests
  set `thread_count` and `timeout` (most also `retries`), so a top-level
  `fetch: {thread_count: 2}` does not change their sources. To change such a key for one
  source, set it in that source's entry (`sources: [{manifest: met, fetch: {thread_count: 2}}]`),
  which wins over both. Keys the manifest does not set take the top-level value, then the
  `FetchSettings` default.
- **`options`**: the manifest's `options:`, then the source entry's `options:`; the entry
  wins. The merged options are checked against the adapter's `Options` when the pipeline loads.
- **`metadata`**: the entry's `metadata:`, when given, replaces the manifest's (no merge);
  the entry's paths are relative to the pipeline file, the manifest's to the manifest file.
- **`name`, `adapter`, `attribution`, `permissions`, `harvest`** come from the manifest only;
  a pipeline cannot set them.
- A source's position in `sources:` is its priority: of duplicates whose licenses rank the
  same and whose originals are as large, dedup keeps the earlier source's record.

`OUT/run.yaml` holds every source as resolved (`sources:` with the merged `fetch`, `options`
and `metadata`), so what a run used can be read there.
"""


@dataclass
class Section:
    model: type[BaseModel]
    paths: list[str] = field(default_factory=list)  # where it sits in a file, as a heading shows them
    listed: dict[str, str] = field(default_factory=dict)  # descriptions of fields that have no description=
    anchor: str = ""  # else the model's name


def reference() -> str:
    """The whole page, in markdown."""
    sections: dict[type[BaseModel], Section] = {}
    filters = {name: stages.filter_class(name) for name in stages.BUILT_IN}
    captioners = {kind: captioner_class(kind).Settings for kind in BUILT_IN_CAPTIONERS}
    adapters = {adapter: options_model(adapter) for adapter in sorted(ADAPTERS)}
    _collect(config.Pipeline, "", sections)
    for name, cls in filters.items():
        _collect(cls.Config, f"filters.{name}", sections)
    for kind, settings in captioners.items():
        _collect(settings, "captions.captioner", sections, root=f"kind: {kind}")
    _collect(config.Manifest, "", sections, root="manifest")
    for adapter, model in adapters.items():
        _collect(model, "options", sections, root=f"adapter: {adapter}")
        sections[model].listed = _listed_options(importlib.import_module(ADAPTERS[adapter]))
        sections[model].anchor = f"adapter-{adapter}"
    done: set[type[BaseModel]] = set()

    def group(roots: list[type[BaseModel]]) -> list[str]:
        """Each root's section, then every model under it not already shown."""
        lines = []
        for root in roots:
            for model in [m for m in sections if m in _reachable(root) and m not in done]:
                done.add(model)
                lines += _render(sections[model], filters)
        return lines

    roots_shown_elsewhere = {*[cls.Config for cls in filters.values()], *captioners.values()}
    pipeline_models = [m for m in sections if m in _reachable(config.Pipeline) and m not in roots_shown_elsewhere]
    return "\n".join([
        "# Pipeline and manifest reference", "",
        f"Generated from the config models by `{COMMAND}`; do not edit it by hand.", "",
        "A **pipeline** (`pipelines/*.yaml`, run with `cleanroom curate run PIPELINE --out OUT`) names the",
        "sources, the license policy, the filters, scoring, dedup, captions and shards of a run. A **manifest**",
        "(`manifests/*.yaml`, or a path a pipeline names) declares one source. Both are validated when they",
        "load: an unknown or misspelt field, or a value of the wrong type, stops the run and the error names",
        "the file and the field. *required* means the field has no default; *none* is YAML's `null`.", "",
        f'<a id="{PRECEDENCE_ANCHOR}"></a>', PRECEDENCE,
        "## Pipeline", "",
        *group(pipeline_models),
        "## Filters", "",
        "`filters:` maps a filter's name (or a `module:Class` import path, see CONTRIBUTING.md) to its",
        "settings; the filters run in the order written, after fetch. Without a `filters:` section every",
        "built-in filter runs with its defaults; `filters: {}` runs none.", "",
        *group([cls.Config for cls in filters.values()]),
        "## Captioners", "",
        "`captions.captioner.kind` picks the captioner: a built-in kind below, or a `module:Class` import",
        "path (see CONTRIBUTING.md). Every kind's settings have `kind` and `batch_size`, and its own fields.", "",
        *group(list(captioners.values())),
        "## Manifest", "",
        *group([config.Manifest]),
        "## Adapter options", "",
        "What a source's `options:` may hold (in its manifest, and per source in a pipeline) depends on its",
        "`adapter`: each adapter's `Options` model (`curate/sources/<adapter>.py`) checks them.", "",
        *group(list(adapters.values())),
    ]).rstrip("\n") + "\n"


def _collect(model: type[BaseModel], path: str, sections: dict[type[BaseModel], Section], root: str = "") -> None:
    """Every model reachable from ``model``, each once, with every path it is reached at."""
    shown = f"`{path}`" + (f" ({root})" if root else "") if path else f"{model.__name__} (top level)"
    section = sections.setdefault(model, Section(model))
    if shown in section.paths:
        return
    section.paths.append(shown)
    for name, info in model.model_fields.items():
        where = f"{path}.{name}" if path else name
        for child, suffix in _models_in(info.annotation):
            _collect(child, where + suffix, sections, root)
        if (model, name) in CHECKED_BY:
            _collect(CHECKED_BY[model, name], where, sections, root)


def _reachable(model: type[BaseModel]) -> set[type[BaseModel]]:
    found = {model}
    for name, info in model.model_fields.items():
        children = [m for m, _ in _models_in(info.annotation)]
        if (model, name) in CHECKED_BY:
            children.append(CHECKED_BY[model, name])
        for child in children:
            if child not in found:
                found |= _reachable(child)
    return found


def _models_in(annotation: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """The models a field's annotation holds, with the path suffix that reaches each (``[]`` in a list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation is not CaptionerSettings:  # the captioner kinds have their own section
            yield annotation, suffix
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _models_in(args[0], suffix)
    elif origin in (list, tuple, set, frozenset):
        for arg in args:
            yield from _models_in(arg, suffix + "[]")
    elif origin is dict:
        yield from _models_in(args[1], suffix + ".<key>")
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _models_in(arg, suffix)


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _render(section: Section, filters: dict[str, type[stages.Filter]]) -> list[str]:
    model = section.model
    heading = section.paths[0] + _kind(model)
    lines = [f'<a id="{section.anchor or _anchor(model)}"></a>', f"### {heading}", ""]
    if len(section.paths) > 1:
        lines += ["Also at " + ", ".join(section.paths[1:]) + ".", ""]
    owner = next((cls for cls in filters.values() if cls.Config is model), None)
    doc = _doc(model) or (_doc(owner) if owner else "")
    if doc:
        lines += [doc, ""]
    if owner:
        reasons = ", ".join(f"`rejected:{code}` ({meaning})" for code, meaning in owner.reasons.items())
        lines += [f"Rejects with {reasons}.", ""]
    return lines + _table(model, section.listed)


def _kind(model: type[BaseModel]) -> str:
    """`` (kind: head)`` for a model that is one member of a union told apart by its ``kind``."""
    info = model.model_fields.get("kind")
    if info is not None and info.is_required() and typing.get_origin(info.annotation) is Literal:
        return f" (kind: {typing.get_args(info.annotation)[0]})"
    return ""


def _doc(obj: type) -> str:
    doc = obj.__dict__.get("__doc__")
    if not doc:
        return ""
    return _md(inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " "))


def _table(model: type[BaseModel], listed: dict[str, str]) -> list[str]:
    rows = ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        kind = _type(info.annotation) + _constraints(info)
        if (model, name) in CONTENTS:
            kind = f"mapping: {CONTENTS[model, name]}"
        described = _md(info.description or listed.get(name, ""))
        rows.append(f"| `{name}` | {_cell(kind)} | {_cell(_default(info))} | {_cell(described)} |")
    return rows + [""]


def _type(annotation: Any) -> str:
    if annotation is type(None):
        return "none"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation is CaptionerSettings:
            return "captioner settings (see [Captioners](#captioners))"
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}"
    if annotation is dict:
        return "mapping"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "PosixPath": "path",
                "Path": "path"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _constraints(info: FieldInfo) -> str:
    found = []
    for item in info.metadata:
        for bound, sign in _BOUNDS.items():
            if isinstance(item, getattr(annotated_types, bound.capitalize())):
                found.append(f"{sign} {getattr(item, bound)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            found.append(f"at least {item.min_length} item{'s' if item.min_length > 1 else ''}")
        if getattr(item, "pattern", None):
            found.append(f"matching `{item.pattern}`")
    return f", {', '.join(found)}" if found else ""


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "*required*"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        set_fields = value.model_dump(mode="json", exclude_defaults=True)
        return "its defaults" if not set_fields else f"`{json.dumps(set_fields, ensure_ascii=False)}`"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Path):  # a file in the package: shown from the checkout's root, as on every machine
        value = value.relative_to(PACKAGE_ROOT).as_posix() if value.is_relative_to(PACKAGE_ROOT) else str(value)
    return f"`{json.dumps(value, ensure_ascii=False, default=str)}`"


_OPTION = re.compile(r"^    (\w+(?:, \w+)*): (.+)$")


def _listed_options(module: types.ModuleType) -> dict[str, str]:
    """An adapter's options as its module docstring lists them, as every adapter does (README, "Commands"):
    ``Options:``, then ``name: what it does`` a line, continued further indented."""
    lines = (inspect.getdoc(module) or "").splitlines()
    listed: dict[str, str] = {}
    names: list[str] = []
    for line in lines[lines.index("Options:") + 1:] if "Options:" in lines else []:
        entry = _OPTION.match(line)
        if entry:
            names = entry.group(1).split(", ")
            listed.update({name: entry.group(2) for name in names})
        elif line.startswith("        ") and names:
            listed.update({name: f"{listed[name]} {line.strip()}" for name in names})
        else:
            break
    return {name: text[:1].upper() + text[1:] for name, text in listed.items()}


def _md(text: str) -> str:
    """reST literals (``x``) as markdown ones; outside them, ``<name>`` is text, not an HTML tag."""
    parts = text.replace("``", "`").split("`")
    return "`".join(re.sub(r"<(?=[A-Za-z/])", "&lt;", part) if i % 2 == 0 else part for i, part in enumerate(parts))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    print(reference(), end="")
