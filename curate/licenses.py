"""License evidence -> registry id, and the policy that decides which ids a run admits.

The registry (``licenses/registry.yaml``) lists every id a record may carry. ``normalize``
turns one raw evidence value (a short name, a machine id, a URL, an HTML fragment) into
such an id, or None when it does not recognise it: an unrecognised value is never guessed,
so it ends as ``rejected:license_unknown`` rather than as a wrong license. A ``Policy``
(``licenses/policy-*.yaml``) admits families and ids; ``apply_policy`` is the batch stage
that applies it to a record table.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, TypeVar

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from curate import records

LICENSES_DIR = Path(__file__).resolve().parents[1] / "licenses"
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


class _RegistryFile(_Strict):
    families: dict[str, str]
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


def _read_yaml(path: Path, model: type[_Model]) -> _Model:
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


_SEPARATORS = re.compile(r"[\s\-_/,;:()\[\]\"']+")
_URL_START = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_DEED = re.compile(r"(?:deed|legalcode)(?:\.[a-z_-]+)?")
_CC_PORT_URL = re.compile(r"^creativecommons\.org/licenses/([a-z-]+)/(\d\.\d)/([a-z]{2})$")
_PORT_ID = re.compile(r"^(CC-[A-Z-]+-(\d\.\d))-([A-Z]{2})$")
_VERSION = re.compile(r"\d\.\d")
_JURISDICTION = re.compile(r"[a-z]{2}")
_TAG = re.compile(r"<[^>]*>")
_HREF = re.compile(r"""href\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)

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


def _text_key(text: str) -> str:
    """Lower case, punctuation and spacing folded: 'CC BY-SA 3.0 es' -> 'cc by sa 3.0 es'."""
    words = (word.strip(".") for word in _SEPARATORS.split(text.lower()))
    return " ".join(word for word in words if word and word not in _FILLER)


def _looks_like_url(text: str) -> bool:
    return bool(_URL_START.match(text)) or text.lower().startswith(("www.", "creativecommons.org/"))


def _url_key(url: str) -> str:
    """Scheme, www., query, trailing slash and deed/legalcode pages dropped: one key per license."""
    rest = _URL_START.sub("", url.strip().lower())
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    host, _, path = rest.partition("/")
    segments = [s for s in path.split("/") if s]
    while segments and _DEED.fullmatch(segments[-1]):
        segments.pop()
    return "/".join([host.removeprefix("www."), *segments])


# ---------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class _Registry:
    families: Mapping[str, str]
    licenses: Mapping[str, License]
    by_text: Mapping[str, str]  # text key -> id
    by_url: Mapping[str, str]  # url key -> id
    cc: _CreativeCommons
    cc_by_code: Mapping[str, _CcKind]  # URL code -> kind, "by-nd-nc" included
    cc_by_words: Mapping[frozenset[str], _CcKind]  # {"by", "sa"} -> kind

    def port(self, base_id: str, jurisdiction: str) -> License | None:
        match = re.fullmatch(r"CC-([A-Z-]+)-(\d\.\d)", base_id)
        base = self.licenses.get(base_id)
        if match is None or base is None or match[2] not in self.cc.port_versions:
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

    def from_url(self, url: str) -> str | None:
        key = _url_key(url)
        if key in self.by_url:
            return self.by_url[key]
        port = _CC_PORT_URL.match(key)
        if port and port[1] in self.cc_by_code:
            found = self.port(_cc_id(self.cc_by_code[port[1]], port[2]), port[3])
            return found.id if found else None
        return None

    def from_text(self, text: str) -> str | None:
        key = _text_key(text)
        return self.by_text.get(key) or self._cc_from_text(key)

    def _cc_from_text(self, key: str) -> str | None:
        """'[cc] <elements> <version> [<jurisdiction>]', elements in any order; nothing else."""
        for pattern, short in _CC_WORDS:
            key = pattern.sub(short, key)
        words = key.split()
        if words[:1] == ["cc"]:
            words = words[1:]
        versions = [i for i, word in enumerate(words) if _VERSION.fullmatch(word)]
        # A name without a version is not recognised: guessing one would invent terms.
        if len(versions) != 1:
            return None
        at = versions[0]
        elements, version, tail = words[:at], words[at], words[at + 1:]
        kind = self.cc_by_words.get(frozenset(elements))
        if kind is None or len(set(elements)) != len(elements):
            return None
        base_id = _cc_id(kind, version)
        if not tail:
            return base_id if base_id in self.licenses else None
        if len(tail) == 1 and _JURISDICTION.fullmatch(tail[0]):
            found = self.port(base_id, tail[0])
            return found.id if found else None
        return None


def _cc_id(kind: _CcKind, version: str) -> str:
    return f"CC-{kind.code.upper()}-{version}"


def _build_registry(path: Path) -> _Registry:
    spec = _read_yaml(path, _RegistryFile)
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
    return _Registry(
        families=MappingProxyType(dict(spec.families)),
        licenses=MappingProxyType(licenses),
        by_text=MappingProxyType(by_text),
        by_url=MappingProxyType(by_url),
        cc=cc,
        cc_by_code=MappingProxyType(cc_by_code),
        cc_by_words=MappingProxyType({frozenset(kind.code.split("-")): kind for kind in cc.kinds}),
    )


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


def _find(license_id: str | None) -> License | None:
    try:
        return get(license_id) if license_id is not None else None
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------
# Normalising evidence


def normalize(value: object) -> str | None:
    """Raw license evidence -> registry id; None when not recognised (never a guess)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return _normalize(value)


@lru_cache(maxsize=65536)  # sources repeat a handful of values across millions of records
def _normalize(value: str) -> str | None:
    reg = _registry()
    for candidate in _candidates(value):
        found = reg.from_url(candidate) if _looks_like_url(candidate) else reg.from_text(candidate)
        if found:
            return found
    return None


def _candidates(value: str) -> list[str]:
    """The visible text first, then each link target: '<a href=URL>CC BY-SA</a>' still resolves."""
    hrefs = [html.unescape(href) for href in _HREF.findall(value)] if "<" in value else []
    # Tags go before entities are decoded, so an escaped '&lt;' is not taken for a tag.
    text = html.unescape(_TAG.sub(" ", value)).strip()
    return [c for c in (text, *hrefs) if c]


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
        spec = _read_yaml(path, _PolicyFile)
        known = families()
        for field, names in (("allow_families", spec.allow_families), ("rank", list(spec.rank))):
            for i, family in enumerate(names):
                if family not in known:
                    raise LicenseFileError(f"{path}: {field}[{i}]: unknown family {family!r}; "
                                           f"families: {', '.join(known)}")
        for field, ids in (("allow_ids", spec.allow_ids), ("deny_ids", spec.deny_ids)):
            for i, license_id in enumerate(ids):
                if _find(license_id) is None:
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
        license = _find(license_id)
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

    def rank(self, license_id: str | None) -> int:
        """Keep-order for exact duplicates: ranked families first, allowed-but-unranked next, the rest last."""
        unranked = max(self.ranks.values(), default=-1) + 1
        license = _find(license_id)
        if license is None or not self.decide(license.id)[0]:
            return unranked + 1
        return self.ranks.get(license.family, unranked)


_EVIDENCE_CHARS = 200


def apply_policy(table: pa.Table, policy: Policy) -> pa.Table:
    """Stage: reject pending rows whose license the policy does not admit.

    Terminal rows keep their status. ``license_url`` is filled from the registry wherever it
    is null and the id is known, so the manifest links every license it names.
    """
    ids = table.column("license").to_pylist()
    urls = table.column("license_url").to_pylist()
    status = table.column("status").to_pylist()
    reason = table.column("reason").to_pylist()
    detail = table.column("detail").to_pylist()
    fields = table.column("license_field").to_pylist()
    values = table.column("license_value").to_pylist()
    for i, license_id in enumerate(ids):
        license = _find(license_id)
        if urls[i] is None and license is not None:
            urls[i] = license.url
        if status[i] != records.PENDING:
            continue
        allowed, why, text = policy.decide(license_id)
        if not allowed:
            # The adapter's note (e.g. a museum's copyright line) stays after the policy's reason.
            note = f"; {detail[i]}" if detail[i] else ""
            status[i], reason[i], detail[i] = records.REJECTED, why, text + _evidence(fields[i], values[i]) + note
    return _replace_columns(table, license_url=urls, status=status, reason=reason, detail=detail)


def _evidence(field: str | None, value: str | None) -> str:
    if value is None:
        return ""
    shown = value if len(value) <= _EVIDENCE_CHARS else value[:_EVIDENCE_CHARS] + "..."
    return f" (from {field or 'evidence'} {shown!r})"


def _replace_columns(table: pa.Table, **columns: list[Any]) -> pa.Table:
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.array(values, type=field.type))
    return table
