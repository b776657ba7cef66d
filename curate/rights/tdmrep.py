"""W3C TDMRep (Text and Data Mining Reservation Protocol): the rules a host publishes in
``/.well-known/tdmrep.json`` and the ``tdm-reservation`` / ``tdm-policy`` response headers.

tdmrep.json is a JSON array of rules ``{"location": PATTERN, "tdm-reservation": 0|1,
"tdm-policy": URL}``; a location is a path pattern in robots.txt syntax (``*`` any
characters, a final ``$`` the end of the path), and the first rule whose location matches
a path applies to it. ``tdm-reservation: 1`` means the rights holder reserves text and
data mining (EU DSM Directive art. 4(3)): the file may not be mined without a licence,
which the policy at ``tdm-policy`` may offer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

RESERVED = 1
HEADER = "tdm-reservation"
POLICY_HEADER = "tdm-policy"


@dataclass(frozen=True)
class Rule:
    location: str
    reservation: int
    policy: str | None = None

    @property
    def pattern(self) -> re.Pattern[str]:
        anchored = self.location.endswith("$")
        body = self.location[:-1] if anchored else self.location
        return re.compile("".join(".*" if c == "*" else re.escape(c) for c in body) + ("$" if anchored else ""))


def parse(text: str) -> list[Rule]:
    """The rules of a tdmrep.json file; ValueError naming the entry that is not a rule."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"a JSON array of rules was expected, got {type(data).__name__}")
    return [_rule(i, entry) for i, entry in enumerate(data)]


def _rule(index: int, entry: Any) -> Rule:
    if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
        raise ValueError(f"rule {index}: an object with a string 'location' was expected, got {entry!r:.120}")
    reservation = entry.get(HEADER)
    if reservation not in (0, 1, "0", "1"):
        raise ValueError(f"rule {index} ({entry['location']}): tdm-reservation must be 0 or 1, got {reservation!r}")
    policy = entry.get(POLICY_HEADER)
    return Rule(entry["location"], int(reservation), policy if isinstance(policy, str) else None)


def matching(rules: list[Rule], path: str) -> Rule | None:
    """The first rule whose location matches ``path`` (a URL path, from its start)."""
    return next((rule for rule in rules if rule.pattern.match(path)), None)


def header_reserved(headers: dict[str, str]) -> bool:
    return headers.get(HEADER, "").strip() == str(RESERVED)
