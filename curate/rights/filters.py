"""The rights checks as record filters: machine-readable opt-outs and AI-generated images.

- ``robots_txt``: the image host's robots.txt disallows the image's URL to our user-agent
  token or to an AI crawler token the pipeline lists: ``rejected:robots_disallowed``;
- ``tdm_reservation``: the host's ``/.well-known/tdmrep.json`` reserves text and data mining
  for the image's path, the record's page (``page_url``) reserves it in a ``<meta
  name="tdm-reservation">`` or a response header, or the image was served with
  ``tdm-reservation: 1``: ``rejected:tdm_reserved``, with the policy URL the host names. A
  TDMRep signal that is there but cannot be read (a tdmrep.json that is not JSON or not
  TDMRep rules, a tdm-reservation other than 0 or 1) is taken as a reservation, fail closed:
  ``rejected:tdm_malformed``, naming the file and what is wrong with it. A page that could
  not be read at all (404, no answer) is no reservation; the record's ``detail`` says so;
- ``embedded_rights``: the original file says, in its own metadata, that mining for AI
  training is prohibited (``rejected:data_mining_prohibited``) or that an AI model made it
  (``rejected:ai_generated``).

The host checks read the run's cached host rules (``HostFilter.hosts``, set by
``curate.rights.bound``), and the page check the run's cached pages (``TdmReservation.pages``),
so they decide before any image of the host is downloaded (``curate.rights.before_fetch``);
the header and embedded checks read the record's ``rights`` column, which fetch fills from
the original bytes and response headers.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curate import records, stages
from curate.rights import tdmrep
from curate.rights.embedded import COLUMN as RIGHTS_COLUMN, SIGNATURE_INVALID, SIGNATURE_VALID
from curate.rights.hosts import HostCache, HostRules, is_web
from curate.rights.pages import Page, PageCache, PageSettings

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
    page_meta: bool = Field(True, description=(
        "Read the tdm-reservation and tdm-policy of the record's page_url (HTML meta or response header): "
        "one request per distinct page per run, before the images, as the page host's robots.txt allows."))
    page_interval: float = Field(0.1, ge=0, description=(
        "Seconds between two page requests to one host (longer when its robots.txt sets a Crawl-delay); "
        "a host's pages are asked one at a time, so a run of a million records on one host's pages takes "
        "a day or more: where the source itself is the licensor, page_meta: false skips the pages."))
    page_max_kib: int = Field(64, ge=1, description=(
        "KiB of a page read at most looking for its tdm meta elements; reading stops at </head> or <body>."))


MALFORMED = "tdm_malformed"


@stages.register
class TdmReservation(HostFilter):
    name = "tdm_reservation"
    reasons = {"tdm_reserved": "the rights holder reserves text and data mining (W3C TDMRep)",
               MALFORMED: ("a TDMRep signal (tdmrep.json, a page's tdm-reservation) is there but unreadable: "
                           "taken as a reservation (fail closed)")}
    Config = TdmSettings

    pages: PageCache | None = None
    _block: dict[str, Page] = {}  # the pages of the block being decided, read from the cache once per block

    @property
    def page_settings(self) -> PageSettings:
        return PageSettings(self.config.page_interval, self.config.page_max_kib * 1024)

    def __call__(self, table):
        self._block = self._pages_of(table)
        try:
            return super().__call__(table)
        finally:
            self._block = {}

    def _pages_of(self, table) -> dict[str, Page]:
        if not self.config.page_meta or self.pages is None or "page_url" not in table.column_names:
            return {}
        return self.pages.lookup(p for p in table["page_url"].unique().drop_null().to_pylist() if is_web(p))

    def _apply(self, row):
        super()._apply(row)
        page = self.page(row) if row["status"] == records.PENDING else None
        note = page.note() if page is not None else None
        if note is not None:  # kept by this check, and the record says what could not be read
            row["detail"] = note

    def page(self, row) -> Page | None:
        """The cached signals of the record's page; None without a page on the web or with the check off."""
        url = row.get("page_url")
        if not self.config.page_meta or not url or not is_web(url):
            return None
        found = self._block.get(url)
        if found is None:
            if self.pages is None:
                raise RuntimeError(f"{self.name} has no page cache: curate.rights.bound gives it to the run's filters")
            found = self.pages.lookup([url]).get(url)
        if found is None:
            raise LookupError(f"{self.pages.folder}: page {url} was not read (rights.before_fetch reads the "
                              "records' pages before the images)")
        return found

    def decide(self, row):
        rules = self.host_rules(row["url"])
        if self.config.tdmrep_json and rules is not None:
            rule, problem = rules.tdm_reservation(row["url"])
            if problem is not None:
                return MALFORMED, f"{problem}; taken as a reservation of {row['url']} (fail closed)"
            if rule is not None and rule.reservation == tdmrep.RESERVED:
                return "tdm_reserved", (f"tdmrep.json of {row['url']}'s host: location {rule.location!r} has "
                                        f"tdm-reservation 1{_policy(rule.policy)}")
        page = self.page(row)
        if page is not None and page.malformed:
            return MALFORMED, (f"{page.evidence()}{_policy(page.policy)}: tdm-reservation must be 0 or 1; "
                               "taken as a reservation (fail closed)")
        if page is not None and page.reserved:
            return "tdm_reserved", page.evidence() + _policy(page.policy)
        headers = found_rights(row).get("headers", {})
        if self.config.header and tdmrep.header_reserved(headers):
            return "tdm_reserved", (f"{row['url']} was served with tdm-reservation: 1"
                                    f"{_policy(headers.get(tdmrep.POLICY_HEADER))}")
        return None

    def describe(self):
        where = [w for w, on in (("the host's tdmrep.json", self.config.tdmrep_json),
                                 ("the record's page (meta or header)", self.config.page_meta),
                                 ("the image's tdm-reservation header", self.config.header)) if on]
        if not where:
            return "TDM reservations: not checked."
        return (f"TDM reservations (W3C TDMRep): images reserved by {' or '.join(where)} are left out; "
                "a signal that is there but unreadable (a malformed tdmrep.json) counts as a reservation "
                "(fail closed), a page that cannot be read at all does not.")


def _policy(url: str | None) -> str:
    return f" (tdm-policy {url})" if url else " (no tdm-policy given)"


class EmbeddedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_mining: bool = Field(True, description="Read XMP plus:DataMining.")
    digital_source_type: bool = Field(True, description="Read XMP Iptc4xmpExt:DigitalSourceType.")
    c2pa: bool = Field(True, description=(
        "Read C2PA actions; the evidence says whether the manifest's signature is valid, invalid or not "
        "verifiable (c2pa-python). A model's making action rejects either way."))
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
                return "ai_generated", _c2pa_evidence(found["c2pa"], said)
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
            ("C2PA actions creating AI-made media (signed or not; the evidence says whether the signature "
             "verifies)", self.config.c2pa),
            ("image generators' text (PNG chunks, EXIF UserComment)", self.config.generator_text)) if on]
        weighed = (" Embedded copyright statements are weighed with the record's license evidence."
                   if self.config.license_evidence else "")
        if not checks:
            return "Embedded rights metadata: not checked." + weighed
        return f"Embedded rights metadata: images whose own metadata carries {', '.join(checks)} are left out.{weighed}"


def _c2pa_evidence(manifest: dict[str, Any], said: str) -> str:
    """What the manifest claims, with what its signature's verification found."""
    signature, validation = manifest.get("signature"), manifest.get("validation")
    if signature == SIGNATURE_VALID:
        return f"C2PA manifest (signature valid, {validation}): {said}"
    if signature == SIGNATURE_INVALID:
        return f"C2PA manifest (signature invalid: {validation}): {said}"
    why = f"; the signature is not verifiable: {validation}" if validation else ""
    return f"C2PA manifest (signature not verified): {said}{why}"
