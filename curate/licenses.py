"""License evidence -> registry id, and the policy that decides which ids a run admits.

The registry (``licenses/registry.yaml``) lists every id a record may carry. ``read``
turns one raw evidence string (a short name, a machine id, a URL, a Wikimedia template or
category) into a ``Reading``: an id, or only a family (``CC BY-SA`` without a version), or
nothing. An unrecognised value is never guessed, so it ends as ``rejected:license_unknown``
rather than as a wrong license. A ``Policy`` (``licenses/policy-*.yaml``) admits families
and ids; ``curate.verdict`` weighs every piece of a record's evidence against it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, TypeVar

import iso3166
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from curate import data

LICENSES_DIR = data.LICENSES
REGISTRY_PATH = LICENSES_DIR / "registry.yaml"
DEFAULT_POLICY_PATH = LICENSES_DIR / "policy-default.yaml"


class LicenseFileError(ValueError):
    """A registry or policy file that does not validate; the message names the file and entry."""


@dataclass(frozen=True)
class License:
    id: str
    name: str
    url: str | None
    family: str
    allowed_for_training: bool  # the registry's informational view; the policy decides
    attribution_required: bool
    port_of: str | None = None  # for a Creative Commons jurisdiction port, its base id


# ---------------------------------------------------------------------------------------
# File schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LicenseEntry(_Strict):
    id: str
    name: str
    url: str | None
    family: str
    allowed_for_training: bool
    attribution_required: bool
    aliases: list[str] = []
    urls: list[str] = []
    patterns: list[str] = []  # regular expressions searched in the matching key, for families of names


class _CcKind(_Strict):
    family: str
    code: str  # the URL path element, e.g. "by-sa"
    name: str
    code_1_0: str | None = None  # a different URL code used by version 1.0

    def url_code(self, version: str) -> str:
        return self.code_1_0 if version == "1.0" and self.code_1_0 else self.code


class _CreativeCommons(_Strict):
    versions: list[str]
    port_versions: list[str]
    version_suffix: dict[str, str]
    allowed_for_training: bool
    attribution_required: bool
    kinds: list[_CcKind]
    # Two-letter port codes Creative Commons used that are not ISO 3166-1 (``uk``).
    extra_jurisdictions: list[str] = []


class _RegistryFile(_Strict):
    families: dict[str, str]
    # Whether works of a family are under copyright; a family not listed may be either (CC0 waives it).
    copyright_status: dict[str, bool]
    # Hosts whose pages are license texts: a link there that we cannot read is evidence we cannot read.
    license_hosts: list[str]
    # Values that say nothing about the license ("see description"): ignored, never a conflict.
    silent: list[str]
    licenses: list[_LicenseEntry]
    creative_commons: _CreativeCommons


class _PolicyFile(_Strict):
    name: str
    description: str = ""
    allow_families: list[str]
    allow_ids: list[str] = []
    deny_ids: list[str] = []
    rank: dict[str, int] = {}


_Model = TypeVar("_Model", bound=BaseModel)


def read_yaml(path: Path, model: type[_Model]) -> _Model:
    """A YAML file validated as ``model``; every error names the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise LicenseFileError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise LicenseFileError(f"{path}: invalid YAML: {e}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{_location(err['loc'])}: {err['msg']}" for err in e.errors())
        raise LicenseFileError(f"{path}: {problems}") from None


def _location(loc: tuple[Any, ...]) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.lstrip(".") or "(top level)"


# ---------------------------------------------------------------------------------------
# Matching keys: evidence and registry entries go through the same functions


_SEPARATORS = re.compile(r"[\s\-_/,;:()\[\]\"'{}|!?*]+")
_URL_START = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_DEED = re.compile(r"(?:deed|legalcode)(?:\.[a-z_-]+)?")
_CC_PORT_URL = re.compile(r"^creativecommons\.org/licenses/([a-z-]+)/(\d\.\d)/([a-z]{2})$")
_PORT_ID = re.compile(r"^(CC-[A-Z-]+-(\d\.\d))-([A-Z]{2})$")
_VERSION = re.compile(r"\d\.\d")
_JURISDICTION = re.compile(r"[a-z]{2}")
_TAG = re.compile(r"<[^>]*>")
_HREF = re.compile(r"""href\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
# Wikimedia wraps the license of a reproduction in the template of the work it shows:
# {{PD-Art|PD-old-100}}, category "PD-Art (PD-old-100)". The underlying template decides.
_WRAPPERS = frozenset({"pd-art", "pd-scan", "licensed-pd-art", "self", "pd-art-two", "licensed-pd-art-two"})
_TEMPLATE = re.compile(r"^\{\{\s*(?:template:)?(.*?)\s*\}\}$", re.IGNORECASE | re.DOTALL)
_WRAPPED_CATEGORY = re.compile(r"^([\w-]+)\s*\((.+)\)$")

# Long-form words of Creative Commons names, rewritten to their short codes so that
# "Attribution-Share Alike 3.0" and "CC BY-SA 3.0" read alike.
_CC_WORDS = (
    (re.compile(r"\bcreative commons\b"), "cc"),
    (re.compile(r"\battribution\b"), "by"),
    (re.compile(r"\bshare ?alike\b"), "sa"),
    (re.compile(r"\bnon ?commercial\b"), "nc"),
    (re.compile(r"\bno ?deriv(?:ative)?s?(?: works)?\b"), "nd"),
)
# Words that qualify a name without changing which license it is.
_FILLER = frozenset({"license", "licence", "international", "unported", "generic"})


def clean(text: str) -> str:
    """NFKC, with format characters (zero-width spaces, bidi marks) dropped and controls made spaces.

    A zero-width space inside "Public domain" or a trailing NUL must not make evidence unreadable,
    and fullwidth or ligature forms read as the letters they show.
    """
    text = unicodedata.normalize("NFKC", text)
    kept = (" " if unicodedata.category(c) == "Cc" else c for c in text if unicodedata.category(c) != "Cf")
    return "".join(kept).strip()


def _text_key(text: str) -> str:
    """Lower case, punctuation and spacing folded: 'CC BY-SA 3.0 es' -> 'cc by sa 3.0 es'."""
    words = (word.strip(".") for word in _SEPARATORS.split(clean(text).lower().replace("©", " © ")))
    return " ".join(word for word in words if word and word not in _FILLER)


def _looks_like_url(text: str) -> bool:
    return bool(_URL_START.match(text)) or text.lower().startswith(("www.", "creativecommons.org/"))


def _url_key(url: str) -> str:
    """Scheme, www., query, trailing slash and deed/legalcode pages dropped: one key per license."""
    rest = _URL_START.sub("", clean(url).lower())
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    host, _, path = rest.partition("/")
    host = host.removeprefix("www.")
    segments = [s for s in path.split("/") if s]
    while segments and _DEED.fullmatch(segments[-1]):
        segments.pop()
    if host == "rightsstatements.org" and segments[:1] == ["page"]:
        segments[0] = "vocab"  # the human-readable page of a statement names the same statement
    return "/".join([host, *segments])


def url_host(url: str) -> str:
    return _url_key(url).partition("/")[0]


def template_parts(text: str) -> list[str]:
    """The license names a Wikimedia template or category carries; the text itself when it is neither.

    ``{{self|cc-by-sa-4.0|GFDL}}`` -> both licenses; ``{{PD-Art|PD-old-100}}`` and the category
    ``PD-Art (PD-old-100)`` -> ``PD-old-100``; named parameters (``author=...``) are not licenses.
    """
    text = clean(text)
    template = _TEMPLATE.match(text)
    if template:
        head, *params = [p.strip() for p in template[1].split("|")]
        params = [p for p in params if p and "=" not in p]
        if head.lower() in _WRAPPERS:
            return params or [head]
        return [head]
    wrapped = _WRAPPED_CATEGORY.match(text)
    if wrapped and wrapped[1].lower() in _WRAPPERS:
        return [wrapped[2].strip()]
    return [text]


# ---------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Reading:
    """What one piece of evidence says: a license id, or only its family, or nothing we recognise."""

    id: str | None = None
    family: str | None = None

    @property
    def recognised(self) -> bool:
        return self.family is not None


UNRECOGNISED = Reading()


@dataclass(frozen=True)
class _Registry:
    families: Mapping[str, str]
    licenses: Mapping[str, License]
    by_text: Mapping[str, str]  # text key -> id
    by_url: Mapping[str, str]  # url key -> id
    patterns: tuple[tuple[re.Pattern, str], ...]  # searched in order, after names and the CC grammar
    scan_keys: tuple[tuple[str, str], ...]  # names looked for inside free text (``scan``)
    silent: frozenset[str]  # text keys
    license_hosts: frozenset[str]
    copyright_status: Mapping[str, bool]
    jurisdictions: frozenset[str]  # lower-case codes a port may carry
    cc: _CreativeCommons
    cc_by_code: Mapping[str, _CcKind]  # URL code -> kind, "by-nd-nc" included
    cc_by_words: Mapping[frozenset[str], _CcKind]  # {"by", "sa"} -> kind

    def reading(self, license_id: str | None) -> Reading:
        return Reading(license_id, get(license_id).family) if license_id else UNRECOGNISED

    def port(self, base_id: str, jurisdiction: str) -> License | None:
        match = re.fullmatch(r"CC-([A-Z-]+)-(\d\.\d)", base_id)
        base = self.licenses.get(base_id)
        if (match is None or base is None or match[2] not in self.cc.port_versions
                or jurisdiction.lower() not in self.jurisdictions):
            return None
        kind, version = self.cc_by_code[match[1].lower()], match[2]
        return License(
            id=f"{base_id}-{jurisdiction.upper()}",
            name=f"Creative Commons {kind.name} {version} ({jurisdiction.upper()})",
            url=f"{base.url}{jurisdiction.lower()}/",
            family=base.family,
            allowed_for_training=base.allowed_for_training,
            attribution_required=base.attribution_required,
            port_of=base_id,
        )

    def from_url(self, url: str) -> Reading:
        key = _url_key(url)
        if key in self.by_url:
            return self.reading(self.by_url[key])
        port = _CC_PORT_URL.match(key)
        if port and port[1] in self.cc_by_code:
            found = self.port(_cc_id(self.cc_by_code[port[1]], port[2]), port[3])
            return self.reading(found.id if found else None)
        return UNRECOGNISED

    def from_text(self, text: str) -> Reading:
        key = _text_key(text)
        if key in self.by_text:
            return self.reading(self.by_text[key])
        found = self._cc_from_text(key)
        if found.recognised:
            return found
        return self.reading(next((license_id for pattern, license_id in self.patterns if pattern.search(key)), None))

    def _cc_from_text(self, key: str) -> Reading:
        """'[cc] <elements> [<version> [<jurisdiction>]]', elements in any order; nothing else.

        Without a version only the family is known: guessing a version would invent terms.
        """
        for pattern, short in _CC_WORDS:
            key = pattern.sub(short, key)
        words = key.split()
        if words[:1] == ["cc"]:
            words = words[1:]
        versions = [i for i, word in enumerate(words) if _VERSION.fullmatch(word)]
        if len(versions) > 1:
            return UNRECOGNISED
        at = versions[0] if versions else len(words)
        elements, tail = words[:at], words[at + 1:]
        kind = self.cc_by_words.get(frozenset(elements))
        if kind is None or len(set(elements)) != len(elements):
            return UNRECOGNISED
        if not versions:
            return Reading(None, kind.family)
        base_id = _cc_id(kind, words[at])
        if not tail:
            return self.reading(base_id if base_id in self.licenses else None)
        # "CC BY 3.0 NC" is not a port: a jurisdiction is a country code, never a license element.
        if len(tail) == 1 and _JURISDICTION.fullmatch(tail[0]) and tail[0] not in _CC_ELEMENTS:
            found = self.port(base_id, tail[0])
            return self.reading(found.id if found else None)
        return UNRECOGNISED


_CC_ELEMENTS = frozenset({"by", "sa", "nc", "nd"})


def _cc_id(kind: _CcKind, version: str) -> str:
    return f"CC-{kind.code.upper()}-{version}"


def _build_registry(path: Path) -> _Registry:
    spec = read_yaml(path, _RegistryFile)
    licenses: dict[str, License] = {}
    by_text: dict[str, str] = {}
    by_url: dict[str, str] = {}

    def add(where: str, license: License, texts: list[str], urls: list[str]) -> None:
        if license.family not in spec.families:
            raise LicenseFileError(f"{path}: {where}: unknown family {license.family!r}; "
                                   f"families: {', '.join(spec.families)}")
        if license.id in licenses:
            raise LicenseFileError(f"{path}: {where}: duplicate license id {license.id!r}")
        licenses[license.id] = license
        for table, keys in ((by_text, map(_text_key, texts)), (by_url, map(_url_key, urls))):
            for key in keys:
                if table.setdefault(key, license.id) != license.id:
                    raise LicenseFileError(f"{path}: {where}: {key!r} already names {table[key]!r}")

    for i, entry in enumerate(spec.licenses):
        license = License(id=entry.id, name=entry.name, url=entry.url, family=entry.family,
                          allowed_for_training=entry.allowed_for_training,
                          attribution_required=entry.attribution_required)
        urls = [entry.url, *entry.urls] if entry.url else entry.urls
        add(f"licenses[{i}] ({entry.id})", license, [entry.id, entry.name, *entry.aliases], urls)

    cc = spec.creative_commons
    missing = set(cc.versions) - set(cc.version_suffix)
    if missing or not set(cc.port_versions) <= set(cc.versions):
        raise LicenseFileError(f"{path}: creative_commons: every version needs a version_suffix and "
                               f"port_versions must be among versions")
    for i, kind in enumerate(cc.kinds):
        for version in cc.versions:
            url = f"https://creativecommons.org/licenses/{kind.url_code(version)}/{version}/"
            license = License(id=_cc_id(kind, version), url=url, family=kind.family,
                              name=f"Creative Commons {kind.name} {version} {cc.version_suffix[version]}",
                              allowed_for_training=cc.allowed_for_training,
                              attribution_required=cc.attribution_required)
            # Names are matched by the Creative Commons grammar, so only the URL is indexed.
            add(f"creative_commons.kinds[{i}] ({kind.code})", license, [], [url])

    cc_by_code = {code: kind for kind in cc.kinds for code in (kind.code, kind.code_1_0) if code}
    unknown = set(spec.copyright_status) - set(spec.families)
    if unknown:
        raise LicenseFileError(f"{path}: copyright_status: unknown families {', '.join(sorted(unknown))}")
    return _Registry(
        families=MappingProxyType(dict(spec.families)),
        licenses=MappingProxyType(licenses),
        by_text=MappingProxyType(by_text),
        by_url=MappingProxyType(by_url),
        patterns=_patterns(path, spec.licenses),
        scan_keys=tuple((key, license_id) for key, license_id in by_text.items()
                        if " " in key or any(c.isdigit() for c in key)),
        silent=frozenset(map(_text_key, spec.silent)),
        license_hosts=frozenset(h.lower().removeprefix("www.") for h in spec.license_hosts),
        copyright_status=MappingProxyType(dict(spec.copyright_status)),
        jurisdictions=frozenset({code.lower() for code in iso3166.countries_by_alpha2}
                                | {code.lower() for code in cc.extra_jurisdictions}),
        cc=cc,
        cc_by_code=MappingProxyType(cc_by_code),
        cc_by_words=MappingProxyType({frozenset(kind.code.split("-")): kind for kind in cc.kinds}),
    )


def _patterns(path: Path, entries: list[_LicenseEntry]) -> tuple[tuple[re.Pattern, str], ...]:
    compiled = []
    for i, entry in enumerate(entries):
        for pattern in entry.patterns:
            try:
                compiled.append((re.compile(pattern), entry.id))
            except re.error as e:
                raise LicenseFileError(f"{path}: licenses[{i}] ({entry.id}).patterns: {pattern!r}: {e}") from None
    return tuple(compiled)


@lru_cache(maxsize=1)
def _registry() -> _Registry:
    return _build_registry(REGISTRY_PATH)


def registry() -> Mapping[str, License]:
    """Every registered id -> License. Jurisdiction ports are not listed; ``get`` resolves them."""
    return _registry().licenses


def families() -> Mapping[str, str]:
    """Family name -> description."""
    return _registry().families


@lru_cache(maxsize=4096)
def get(license_id: str) -> License:
    """The License for a registry id, including ports such as ``CC-BY-SA-3.0-ES``."""
    reg = _registry()
    if license_id in reg.licenses:
        return reg.licenses[license_id]
    port = _PORT_ID.match(license_id)
    found = reg.port(port[1], port[3]) if port else None
    if found is None:
        raise KeyError(f"license id {license_id!r} is not in the registry ({REGISTRY_PATH})")
    return found


def find(license_id: str | None) -> License | None:
    """``get``, or None for None and for ids the registry does not know."""
    try:
        return get(license_id) if license_id is not None else None
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------
# Normalising evidence


def read(value: str) -> Reading:
    """One plain evidence string (a name, a machine id, a URL, a template) -> what it says.

    A template that names several licenses (``{{self|cc-by-sa-4.0|GFDL}}``) reads as one only
    when they agree; HTML is split into pieces by ``curate.verdict``, not here.
    """
    # Sources repeat a handful of short values across millions of records; long free text
    # (a description searched for "all rights reserved") is not worth keeping.
    return _read_cached(value) if len(value) <= _CACHED_CHARS else _read(value)


_CACHED_CHARS = 256


@lru_cache(maxsize=65536)
def _read_cached(value: str) -> Reading:
    return _read(value)


def _read(value: str) -> Reading:
    reg = _registry()
    readings = {reg.from_url(part) if _looks_like_url(part) else reg.from_text(part)
                for part in template_parts(value)}
    if len(readings) != 1:
        families = {r.family for r in readings}
        return Reading(None, families.pop()) if len(families) == 1 else UNRECOGNISED
    return readings.pop()


_URL_IN_TEXT = re.compile(r"(?:https?:)?//[^\s<>\"')]+|www\.[^\s<>\"')]+|creativecommons\.org/[^\s<>\"')]+",
                          re.IGNORECASE)
# A jurisdiction is not looked for: in prose the next word is rarely one, and the family is what counts.
_CC_IN_KEY = re.compile(r"\bcc(?: (?:by|nc|nd|sa))+(?: \d\.\d)?|\bby(?: (?:nc|nd|sa))* \d\.\d")


def scan(text: str) -> tuple[Reading, ...]:
    """Every license named somewhere inside free text ("Taken in 1970. CC BY-NC 4.0"), once each.

    For fields that are not license fields (a description, a museum's rights line): names of
    two or more words (or with a digit: "CC0") and the registry's patterns are looked for, single
    words ("copyright", "PD") are not, since prose uses them without naming a license.
    """
    # Categories and rights lines repeat across a collection; descriptions do not.
    return _scan_cached(text) if len(text) <= _CACHED_CHARS else _scan(text)


@lru_cache(maxsize=65536)
def _scan_cached(text: str) -> tuple[Reading, ...]:
    return _scan(text)


def _scan(text: str) -> tuple[Reading, ...]:
    reg = _registry()
    key = _text_key(text)
    found = [reg.reading(license_id) for phrase, license_id in reg.scan_keys if f" {phrase} " in f" {key} "]
    found += [reg.reading(license_id) for pattern, license_id in reg.patterns if pattern.search(key)]
    cc_key = key
    for pattern, short in _CC_WORDS:
        cc_key = pattern.sub(short, cc_key)
    found += [reg.from_text(match) for match in _CC_IN_KEY.findall(cc_key)]
    found += [reg.from_url(url) for url in _URL_IN_TEXT.findall(clean(text))]
    return tuple(dict.fromkeys(r for r in found if r.recognised))


def is_silent(value: str) -> bool:
    """Evidence that says nothing about the license: empty once cleaned, or "see description"."""
    key = _text_key(value)
    return not key or key in _registry().silent


def is_license_host(url: str) -> bool:
    return url_host(url) in _registry().license_hosts


def copyright_status(family: str) -> bool | None:
    """True when works of ``family`` are under copyright, False when not, None when either."""
    return _registry().copyright_status.get(family)


def html_pieces(value: str) -> tuple[str, list[str]]:
    """An HTML fragment's visible text and each of its link targets, entities decoded."""
    hrefs = [html.unescape(href) for href in _HREF.findall(value)] if "<" in value else []
    # Tags go before entities are decoded, so an escaped '&lt;' is not taken for a tag.
    text = html.unescape(_TAG.sub(" ", value)).strip() if "<" in value else html.unescape(value).strip()
    return text, hrefs


def normalize(value: object) -> str | None:
    """Raw license evidence -> registry id; None when not recognised or when its parts disagree.

    Visible text and link targets of an HTML value must agree: ``<a href=BY-NC>Public
    domain</a>`` is no license. Never a guess.
    """
    if not isinstance(value, str) or is_silent(value):
        return None
    text, hrefs = html_pieces(value)
    readings = [read(part) for part in (text, *hrefs) if part and not is_silent(part)]
    ids = {r.id for r in readings if r.id}
    families = {r.family for r in readings if r.recognised}
    if len(ids) == 1 and len(families) == 1 and all(r.recognised for r in readings):
        return ids.pop()
    return None


def normalize_any(*values: object) -> tuple[str | None, str | None]:
    """Try evidence values in order: ``(id, the value it came from)``.

    When none is recognised the id is None and the value is the first non-empty one, so
    the record still shows the evidence it was rejected on.
    """
    evidence: str | None = None
    for value in values:
        if not isinstance(value, str) or not value.strip():
            continue
        found = normalize(value)
        if found:
            return found, value
        evidence = evidence or value
    return None, evidence


# ---------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True)
class Policy:
    name: str
    path: str  # the file it was loaded from, for messages and run reports
    allow_families: frozenset[str]
    allow_ids: frozenset[str]
    deny_ids: frozenset[str]  # wins over both allow lists
    ranks: dict[str, int]  # family -> rank for the exact-dedup keep policy, lower is preferred

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        spec = read_yaml(path, _PolicyFile)
        known = families()
        for field, names in (("allow_families", spec.allow_families), ("rank", list(spec.rank))):
            for i, family in enumerate(names):
                if family not in known:
                    raise LicenseFileError(f"{path}: {field}[{i}]: unknown family {family!r}; "
                                           f"families: {', '.join(known)}")
        for field, ids in (("allow_ids", spec.allow_ids), ("deny_ids", spec.deny_ids)):
            for i, license_id in enumerate(ids):
                if find(license_id) is None:
                    raise LicenseFileError(f"{path}: {field}[{i}]: unknown license id {license_id!r}")
        both = set(spec.allow_ids) & set(spec.deny_ids)
        if both:
            raise LicenseFileError(f"{path}: ids both allowed and denied: {', '.join(sorted(both))}")
        return cls(name=spec.name, path=str(path), allow_families=frozenset(spec.allow_families),
                   allow_ids=frozenset(spec.allow_ids), deny_ids=frozenset(spec.deny_ids),
                   ranks=dict(spec.rank))

    @classmethod
    def default(cls) -> Policy:
        return cls.load(DEFAULT_POLICY_PATH)

    def decide(self, license_id: str | None) -> tuple[bool, str, str]:
        """``(allowed, reason, detail)``; reason is "" when allowed, else a ``records`` reason code."""
        if license_id is None:
            return False, "license_unknown", "no recognised license"
        license = find(license_id)
        if license is None:
            return False, "license_unknown", f"license id {license_id!r} is not in the registry"
        what = f"license {license.id} (family {license.family})"
        # A port answers to its base id too: denying CC-BY-SA-3.0 denies CC-BY-SA-3.0-ES.
        ids = {license.id, license.port_of} - {None}
        if ids & self.deny_ids:
            return False, "license_not_allowed", f"{what} is denied by policy {self.name}"
        if ids & self.allow_ids or license.family in self.allow_families:
            return True, "", f"{what} is allowed by policy {self.name}"
        return False, "license_not_allowed", f"{what} is not allowed by policy {self.name}"

    def refuses_family(self, family: str) -> bool:
        """A family whose every member this policy refuses: evidence naming only the family is enough."""
        return family not in self.allow_families and all(get(i).family != family for i in self.allow_ids)

    def rank(self, license_id: str | None) -> int:
        """Keep-order for exact duplicates: ranked families first, allowed-but-unranked next, the rest last."""
        unranked = max(self.ranks.values(), default=-1) + 1
        license = find(license_id)
        if license is None or not self.decide(license.id)[0]:
            return unranked + 1
        return self.ranks.get(license.family, unranked)
