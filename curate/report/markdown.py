"""Record values written into Markdown: escaped, so a title or a creator's name is shown as text
and can never become a link, an image, a heading or a table cell boundary."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

# Every character Markdown (CommonMark and GitHub's tables) may read as syntax, and the HTML brackets.
_SYNTAX = re.compile(r"([\\`*_{}\[\]()<>|~])")


def text(value: Any) -> str:
    """``value`` as literal Markdown text on one line."""
    return _SYNTAX.sub(r"\\\1", " ".join(str(value).split()))


def web_url(value: str | None) -> str | None:
    """``value`` when it is an http(s) URL a reader may follow, else None (javascript:, file: ...)."""
    if not value:
        return None
    parts = urlsplit(value.strip())
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def link(label: Any, url: str | None) -> str:
    """``[label](url)`` for a web URL, else the escaped label alone."""
    target = web_url(url)
    if target is None:
        return text(label)
    return f"[{text(label)}](<{target.replace('<', '%3C').replace('>', '%3E').replace(' ', '%20')}>)"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A GitHub table; cells are written as given (escape record values with ``text`` first)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def things(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
