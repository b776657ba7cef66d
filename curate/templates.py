"""Text templates for attribution lines and captions.

``{field}`` is replaced by the record's value. A part in square brackets is optional:
it is dropped whole when any field inside it is empty, so ``"{title}[, by {creator}]"``
never yields "by None" or a dangling comma.
"""

from __future__ import annotations

import re
import string
from typing import Any, Mapping

_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_PLACEHOLDERS = {"none", "null", "unknown", "n/a", "nan"}


def present(value: Any) -> bool:
    return value is not None and str(value).strip().lower() not in _PLACEHOLDERS | {""}


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template.replace("[", "").replace("]", "")) if name}


def render(template: str, values: Mapping[str, Any]) -> str | None:
    """The filled template, or None when a required (non-bracketed) field is empty."""
    def optional(match: re.Match) -> str:
        part = match.group(1)
        if all(present(values.get(name)) for name in fields_of(part)):
            return part.format_map({k: str(v).strip() for k, v in values.items() if present(v)})
        return ""

    body = _OPTIONAL.sub(optional, template)
    required = fields_of(body)
    if not all(present(values.get(name)) for name in required):
        return None
    text = body.format_map({k: str(v).strip() for k, v in values.items() if present(v)})
    return re.sub(r"\s+", " ", text).strip(" ,;") or None
