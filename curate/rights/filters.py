"""The rights checks as record filters: machine-readable opt-outs and AI-generated images.

- ``robots_txt``: the image host's robots.txt disallows the image's URL to our user-agent
  token or to an AI crawler token the pipeline lists: ``rejected:robots_disallowed``;
- ``tdm_reservation``: the host's ``/.well-known/tdmrep.json`` reserves text and data mining
  for the image's path, or the image was served with ``tdm-reservation: 1``:
  ``rejected:tdm_reserved``, with the policy URL the host names;
- ``embedded_rights``: the original file says, in its own metadata, that mining for AI
  training is prohibited (``rejected:data_mining_prohibited``) or that an AI model made it
  (``rejected:ai_generated``).

The host checks read the run's cached host rules (``HostFilter.hosts``, set by
``curate.rights.bound``), so they decide before any image of the host is downloaded
(``curate.rights.before_fetch``); the header and embedded checks read the record's
``rights`` column, which fetch fills from the original bytes and response headers.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curate import stages
from curate.rights import tdmrep
from curate.rights.embedded import COLUMN as RIGHTS_COLUMN
from curate.rights.hosts import HostCache, HostRules, is_web

# The AI crawler tokens sites name in robots.txt to keep their files out of AI training sets, and img2dataset's
# own (our fetcher sends it): our token must be listed too, as the pipeline's fetch user_agent_token says it.
DEFAULT_TOKENS = ["cleanroom", "img2dataset", "CCBot", "GPTBot", "Google-Extended", "ClaudeBot", "anthropic-ai",
                  "Applebot-Extended", "Bytespider", "meta-externalagent", "PerplexityBot", "cohere-ai"]
# PLUS "Data Mining" vocabulary (http://ns.useplus.org/ldf/vocab/DMI-*): every value but these two forbids
# training our model (noncommercial included: the model's license allows commercial use).
DATA_MINING_ALLOWED = {"DMI-ALLOWED", "DMI-UNSPECIFIED"}
# IPTC Digital Source Type codes (http://cv.iptc.org/newscodes/digitalsourcetype/) for media a model made.
AI_SOURCE_TYPES = {"trainedAlgorithmicMedia", "compositeSynthetic", "algorithmicMedia",
                   "compositeWithTrainedAlgorithmicMedia"}
C2PA_MAKING_ACTIONS = {"c2pa.created", "c2pa.opened"}


def found_rights(row: dict[str, Any]) -> dict[str, Any]:
    text = row.get(RIGHTS_COLUMN)
    return json.loads(text) if text else {}


def _code(value: str) -> str:
    """The code a vocabulary URI ends in (the value itself when it is already a bare code)."""
    return value.rstrip("/").rsplit("/", 1)[-1]


class HostFilter(stages.Filter):
    """A filter that reads the host rules the run cached before fetch."""

    hosts: HostCache | None = None

    def host_rules(self, url: str) -> HostRules | None:
        """The cached rules of ``url``'s host; None for a URL not on the web (the opt-in store's file://)."""
        if not is_web(url):
            return None
        if self.hosts is None:
            raise RuntimeError(f"{self.name} has no host rules: curate.rights.bound gives them to the run's filters")
        return self.hosts.rules(url)


class RobotsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_TOKENS), min_length=1, description=(
        "User-agent tokens whose robots.txt rules apply: a URL disallowed to any of them is left out."))


@stages.register
class RobotsTxt(HostFilter):
    name = "robots_txt"
    reasons = {"robots_disallowed": "the image host's robots.txt disallows the URL to our token or an AI crawler's"}
    Config = RobotsSettings

    def decide(self, row):
        rules = self.host_rules(row["url"])
        refusal = rules.robots_refusal(row["url"], self.config.tokens) if rules else None
        return ("robots_disallowed", refusal) if refusal else None

    def describe(self):
        return f"robots.txt: images its host disallows to any of {', '.join(self.config.tokens)} are left out."


class TdmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tdmrep_json: bool = Field(True, description="Read the host's /.well-known/tdmrep.json.")
    header: bool = Field(True, description="Read the image response's tdm-reservation header.")


@stages.register
class TdmReservation(HostFilter):
    name = "tdm_reservation"
    reasons = {"tdm_reserved": "the rights holder reserves text and data mining (W3C TDMRep)"}
    Config = TdmSettings

    def decide(self, row):
        rules = self.host_rules(row["url"])
        if self.config.tdmrep_json and rules is not None:
            rule, problem = rules.tdm_reservation(row["url"])
            if problem is None and rule is not None and rule.reservation == tdmrep.RESERVED:
                return "tdm_reserved", (f"tdmrep.json of {row['url']}'s host: location {rule.location!r} has "
                                        f"tdm-reservation 1{_policy(rule.policy)}")
        headers = found_rights(row).get("headers", {})
        if self.config.header and tdmrep.header_reserved(headers):
            return "tdm_reserved", (f"{row['url']} was served with tdm-reservation: 1"
                                    f"{_policy(headers.get(tdmrep.POLICY_HEADER))}")
        return None

    def describe(self):
        where = [w for w, on in (("the host's tdmrep.json", self.config.tdmrep_json),
                                 ("the image's tdm-reservation header", self.config.header)) if on]
        if not where:
            return "TDM reservations: not checked."
        return f"TDM reservations (W3C TDMRep): images reserved by {' or '.join(where)} are left out."


def _policy(url: str | None) -> str:
    return f" (tdm-policy {url})" if url else " (no tdm-policy given)"


class EmbeddedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_mining: bool = Field(True, description="Read XMP plus:DataMining.")
    digital_source_type: bool = Field(True, description="Read XMP Iptc4xmpExt:DigitalSourceType.")
    c2pa: bool = Field(True, description="Read C2PA actions (manifest signatures are not verified).")
    generator_text: bool = Field(True, description=(
        "Read what image generators write: PNG text chunks, AUTOMATIC1111's EXIF UserComment."))
    license_evidence: bool = Field(True, description=(
        "Weigh dc:rights, xmpRights and the IPTC copyright notice in the license verdict."))


@stages.register
class EmbeddedRights(stages.Filter):
    name = "embedded_rights"
    reasons = {"data_mining_prohibited": "the image's own metadata (PLUS DataMining) prohibits AI/ML training",
               "ai_generated": "the image's own metadata says an AI model made it"}
    Config = EmbeddedSettings

    def decide(self, row):
        found = found_rights(row)
        xmp = found.get("xmp", {})
        if self.config.data_mining:
            refused = [v for v in xmp.get("data_mining", []) if _code(v) not in DATA_MINING_ALLOWED]
            if refused:
                return "data_mining_prohibited", f"XMP plus:DataMining {', '.join(refused)}"
        if self.config.digital_source_type:
            made = [v for v in xmp.get("digital_source_type", []) if _code(v) in AI_SOURCE_TYPES]
            if made:
                return "ai_generated", f"XMP Iptc4xmpExt:DigitalSourceType {', '.join(made)}"
        if self.config.c2pa:
            made = [a for a in found.get("c2pa", {}).get("actions", []) if a.get("action") in C2PA_MAKING_ACTIONS
                    and _code(a.get("digitalSourceType", "")) in AI_SOURCE_TYPES]
            if made:
                said = "; ".join(f"{a['action']} with digitalSourceType {a['digitalSourceType']}" for a in made)
                return "ai_generated", f"C2PA manifest (signature not verified): {said}"
        if self.config.generator_text:
            chunks = found.get("generator", [])
            if chunks:
                said = "; ".join(f"{c['where']} as {c['generator']} writes it: {c['text']!r}" for c in chunks)
                return "ai_generated", said
        return None

    def describe(self):
        checks = [what for what, on in (
            ("PLUS DataMining prohibitions", self.config.data_mining),
            ("IPTC digital source types of AI-made media", self.config.digital_source_type),
            ("C2PA actions creating AI-made media (signatures not verified)", self.config.c2pa),
            ("image generators' text (PNG chunks, EXIF UserComment)", self.config.generator_text)) if on]
        weighed = (" Embedded copyright statements are weighed with the record's license evidence."
                   if self.config.license_evidence else "")
        if not checks:
            return "Embedded rights metadata: not checked." + weighed
        return f"Embedded rights metadata: images whose own metadata carries {', '.join(checks)} are left out.{weighed}"
