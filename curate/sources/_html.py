"""HTML fragments in source metadata -> plain text.

Sources hand us display HTML (Wikimedia ``extmetadata``, Flickr descriptions). Creators,
titles and captions want the text a reader sees, not the markup: tags go, entities are
decoded, whitespace is collapsed. Built on the stdlib parser, which tolerates the broken
fragments real records contain.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

# Elements a browser never shows as text, and void elements that have no end tag (so
# they must not open a nesting level while we are skipping a hidden subtree).
_NO_TEXT = frozenset({"script", "style", "template", "head", "title"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})
# Tags that end a visual line or block: their boundaries must separate words.
_BREAKS = frozenset({"br", "p", "div", "li", "tr", "td", "th", "dd", "dt", "ul", "ol", "dl", "table",
                     "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "section"})
# MediaWiki marks maintenance boxes ("This file is lacking author information") with the
# ``metadata`` class so mirrors and prints hide them; they are not part of the value.
_HIDDEN_CLASSES = frozenset({"metadata"})
_DISPLAY_NONE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def _hidden(tag: str, attrs: dict[str, str | None]) -> bool:
    if tag in _NO_TEXT:
        return True
    classes = set((attrs.get("class") or "").split())
    return bool(classes & _HIDDEN_CLASSES) or bool(_DISPLAY_NONE.search(attrs.get("style") or ""))


class _TextParser(HTMLParser):
    """Collects visible text, split by the ``lang`` of enclosing description blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.by_lang: dict[str, list[str]] = {}
        self._skip_depth = 0  # > 0 while inside a hidden subtree
        self._lang_stack: list[tuple[str, int]] = []  # (lang, depth) of open language blocks
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br" and not self._skip_depth:
                self._emit(" ")
            return
        self._depth += 1
        attr = dict(attrs)
        if self._skip_depth or _hidden(tag, attr):
            self._skip_depth += 1
            return
        classes = set((attr.get("class") or "").split())
        if "language" in classes:
            # Commons' {{en|...}} blocks start with a label span ("English:"); it names the
            # language, which the block's lang attribute already carries.
            self._skip_depth += 1
            return
        if "description" in classes and attr.get("lang"):
            self._lang_stack.append((attr["lang"], self._depth))
        if tag in _BREAKS:
            self._emit(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if self._skip_depth:
            self._skip_depth -= 1
        elif tag in _BREAKS:
            self._emit(" ")
        if self._lang_stack and self._lang_stack[-1][1] == self._depth:
            self._lang_stack.pop()
        self._depth = max(self._depth - 1, 0)

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._emit(data)

    def _emit(self, data: str) -> None:
        self.parts.append(data)
        if self._lang_stack:
            self.by_lang.setdefault(self._lang_stack[-1][0], []).append(data)


def _collapse(parts: list[str]) -> str | None:
    s = _SPACES.sub(" ", "".join(parts)).strip()
    return s or None


def _parse(value: Any) -> _TextParser | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    parser = _TextParser()
    parser.feed(str(value))
    parser.close()
    return parser


def strip_html(value: Any) -> str | None:
    """Visible plain text of an HTML fragment (or plain string); None when empty or not a scalar."""
    parser = _parse(value)
    return _collapse(parser.parts) if parser else None


def text_by_language(value: Any) -> dict[str, str] | None:
    """Per-language text of a fragment made of ``<div class="description" lang="..">`` blocks.

    None when the fragment has no such blocks (a single, unlabelled text).
    """
    parser = _parse(value)
    if not parser or not parser.by_lang:
        return None
    texts = {lang: _collapse(parts) for lang, parts in parser.by_lang.items()}
    return {lang: t for lang, t in texts.items() if t} or None
