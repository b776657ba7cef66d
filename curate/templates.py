"""Text templates for attribution lines and captions.

``{field}`` is replaced by the record's value. A part in square brackets is optional:
it is dropped whole when any field inside it is empty, so ``"{title}[, by {creator}]"``
never yields "by None" or a dangling comma. ``{{`` and ``}}`` stand for literal braces.

A template is parsed once, and only plain ``{name}`` fields are accepted: no format specs,
conversions or attribute/index access, which would let a config format values in ways
nobody reviews. Record values are data: they are substituted in one pass into the parsed
template and never parsed again, so a title such as ``{title:>99999}`` or ``[x]`` appears
literally. Each value is cut to ``MAX_VALUE_CHARS`` and the whole text to ``MAX_CHARS``
(at a word end, with an ellipsis), so no record can make a line of unbounded size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

# An attribution or caption longer than this is no longer a line: 1,000 characters hold any
# real title, creator list and license name; captions are cut shorter again by their stage.
MAX_CHARS = 1000
MAX_VALUE_CHARS = 1000
ELLIPSIS = "…"

_PLACEHOLDERS = {"none", "null", "unknown", "n/a", "nan"}
_TOKEN = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[\[\]{}]|[^\[\]{}]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"\s+")


class TemplateError(ValueError):
    """A template the renderer refuses; the message quotes the template."""


@dataclass(frozen=True)
class Field:
    name: str


Item = str | Field  # literal text, or a field to fill


@dataclass(frozen=True)
class Segment:
    items: tuple[Item, ...]
    optional: bool

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.items if isinstance(i, Field))


@dataclass(frozen=True)
class Template:
    segments: tuple[Segment, ...]

    @property
    def fields(self) -> set[str]:
        return {name for s in self.segments for name in s.fields}

    @property
    def required(self) -> set[str]:
        """Fields outside every [optional] part: the template renders nothing without them."""
        return {name for s in self.segments if not s.optional for name in s.fields}


def _item(token: str, template: str) -> Item:
    if token in ("{{", "}}"):
        return token[0]
    if not token.startswith("{"):
        return token
    name = token[1:-1]
    if not _NAME.fullmatch(name):
        raise TemplateError(f"template {template!r}: {token} is not a field; fields are plain names such as "
                            "{title} (no format specs, conversions, attributes or indexes)")
    return Field(name)


@lru_cache(maxsize=512)
def parse(template: str) -> Template:
    """The template's segments; a TemplateError for anything but text, ``{name}`` and unnested ``[...]``."""
    segments: list[Segment] = []
    items: list[Item] = []
    optional = False
    for token in _TOKEN.findall(template):
        if token in ("[", "]"):
            if (token == "[") == optional:
                raise TemplateError(f"template {template!r}: optional parts must be [...] pairs, not nested")
            segments.append(Segment(tuple(items), optional))
            items, optional = [], token == "["
        elif token in ("{", "}"):
            raise TemplateError(f"template {template!r}: unmatched {token!r} (write {token * 2} for a literal one)")
        else:
            items.append(_item(token, template))
    if optional:
        raise TemplateError(f"template {template!r}: optional parts must be [...] pairs, not nested")
    segments.append(Segment(tuple(items), False))
    return Template(tuple(s for s in segments if s.items))


def present(value: Any) -> bool:
    return value is not None and str(value).strip().lower() not in _PLACEHOLDERS | {""}


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word end, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit - len(ELLIPSIS)]
    space = cut.rfind(" ")
    # A run without spaces (a URL, CJK text) has no word end worth waiting for: cut at the limit.
    if space > len(cut) // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;" + ELLIPSIS) + ELLIPSIS  # one ellipsis, also where a cut value ends the text


def render(template: str | Template, values: Mapping[str, Any], max_chars: int = MAX_CHARS) -> str | None:
    """The filled template, or None when a required (non-bracketed) field is empty."""
    parsed = parse(template) if isinstance(template, str) else template
    pieces: list[str] = []
    for segment in parsed.segments:
        if not all(present(values.get(name)) for name in segment.fields):
            if segment.optional:
                continue
            return None
        pieces.extend(i if isinstance(i, str) else shorten(str(values[i.name]).strip(), MAX_VALUE_CHARS)
                      for i in segment.items)
    text = _SPACE.sub(" ", "".join(pieces)).strip(" ,;")
    return shorten(text, max_chars) or None
