"""Caption text hygiene and the ``captions`` column.

Every caption, whatever made it, goes through ``finish``: markup and runs of whitespace
go, so do control characters, stray punctuation left by joined parts is tidied, and it
is cut to ``max_chars`` at a sentence, clause or word end. The ``captions`` column holds, per record, a JSON list of
``{"text", "origin", "lang"?, "model"?}``: every caption made, the chosen one included.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, Iterable

import pyarrow as pa

from curate.sources._html import strip_html

COLUMN = "captions"

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])(?=\s|$)")
_DOUBLE_STOP = re.compile(r"(?<!\.)([.!?])\s*\.(?!\.)")  # "Title.. A view" from "{title}. {description}"
_SENTENCE_END = re.compile(r"[.!?]\s+(?=\S)")
_CLAUSE_END = re.compile(r"[,;]\s+")
_TRAILING = " ,;:/-–—"  # left at the end by a cut, or by catalogue titles ("Voyage /")
_NO_WORDS = re.compile(r"^\W*$")


def plain(value: Any) -> str | None:
    """Visible text of a field value (HTML stripped, entities decoded, whitespace collapsed)."""
    return strip_html(value)


def _visible(char: str) -> str:
    # Control and format characters (a model's byte-level tokens can decode to them) and the
    # replacement character of a broken byte sequence are not text a reader sees.
    return " " if unicodedata.category(char)[0] == "C" or char == "\ufffd" else char


def tidy(text: str) -> str:
    text = "".join(_visible(c) for c in text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))
    return _DOUBLE_STOP.sub(r"\1", text).strip(_TRAILING)


def _last_end(pattern: re.Pattern, text: str, keep: int, limit: int, sentence: bool = False) -> int | None:
    """The end of the longest prefix of ``text`` (``keep`` to ``limit`` characters) that ``pattern``
    closes; a clause mark itself is dropped, so it may sit just past the limit."""
    ends = []
    for m in pattern.finditer(text, 0, limit + 2):  # +2: see the space after a mark at the limit
        end = m.start() + 1
        if sentence and end <= limit and text[m.end()].isupper():
            ends.append(end)
        elif not sentence and m.start() <= limit:
            ends.append(m.start())
    ends = [e for e in ends if e >= keep]
    return ends[-1] if ends else None


def cap(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars``, at the best boundary that keeps over half of it.

    A sentence end wins when it keeps three quarters; else the later of the last sentence
    and clause ends; else a word end. A sentence ends at ". " before a capital, so
    "ca. 5 miles" is not cut after "ca.".
    """
    if len(text) <= max_chars:
        return text
    keep = max_chars // 2
    sentence = _last_end(_SENTENCE_END, text, keep, max_chars, sentence=True)
    clause = _last_end(_CLAUSE_END, text, keep, max_chars)
    if sentence is not None and sentence >= max_chars * 3 // 4:
        end = sentence
    else:
        end = max((e for e in (sentence, clause) if e is not None), default=None)
    if end is None:
        space = text.rfind(" ", 0, max_chars + 1)
        # Scripts written without spaces (CJK) have no word end to cut at: cut at the limit.
        end = space if space >= keep else max_chars
    return text[:end].rstrip(_TRAILING)


def finish(text: str | None, max_chars: int) -> str | None:
    """A caption ready to store, or None when nothing readable is left."""
    text = plain(text)
    if not text:
        return None
    text = cap(tidy(text), max_chars)
    return None if _NO_WORDS.match(text) else text


def entry(text: str, origin: str, **extra: str | None) -> dict[str, str]:
    return {"text": text, "origin": origin, **{k: v for k, v in extra.items() if v}}


def read(value: str | None) -> list[dict[str, str]]:
    return json.loads(value) if value else []


def dump(entries: list[dict[str, str]]) -> str | None:
    return json.dumps(entries, ensure_ascii=False) if entries else None


def replace(entries: Iterable[dict[str, str]], origins: set[str], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """``entries`` with those of ``origins`` replaced by ``new``: re-running a stage never piles up captions."""
    return [e for e in entries if e["origin"] not in origins] + new


def with_column(schema: pa.Schema, name: str = COLUMN, type_: pa.DataType = pa.string()) -> pa.Schema:
    """The batch schema with a column a caption stage owns, typed (a Ray round trip types an
    all-null column as null, and records.conform only re-types the columns of records.SCHEMA)."""
    field = pa.field(name, type_)
    if name not in schema.names:
        return schema.append(field)
    return schema.set(schema.get_field_index(name), field)
