"""Options of the opt-in source: one typed set for the adapter and the intake.

They live where every source's options live, in ``manifests/optin.yaml`` and in a
pipeline's entry for the source, so "a pipeline allows a host by name" means exactly
that pipeline's ``options.allow_hosts``. The intake (web app, ``cleanroom optin submit``)
reads them from the manifest, or from a pipeline given with ``--pipeline``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curate import data
from curate.optin.errors import OptinError

ADAPTER = "optin"
DEFAULT_MANIFEST = data.MANIFESTS / "optin.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    max_bytes: int = Field(default=20 * 2**20, ge=1, description="Bytes per image, as uploaded or fetched.")
    # A 50 kB PNG can claim 100k x 100k.
    max_pixels: int = Field(default=40_000_000, ge=1, description=(
        "Pixels per image, checked from the header before any pixel is decoded."))


class IntakeLimits(_Strict):
    """What one intake server lets a stranger cost it. Counters live in the server process: behind
    several server processes, each counts alone (see SECURITY.md)."""

    max_fetches: int = Field(default=4, ge=1, description="URL fetches at once; the next answers 503 at once.")
    # Under twice limits.max_pixels, two images at the limit never decode together; the rest above
    # max_pixels is room for ordinary photos beside one.
    decode_pixel_budget: int = Field(default=60_000_000, ge=1, description=(
        "Decoded pixels held at once over all uploads."))
    decode_wait_s: float = Field(default=20.0, gt=0, description=(
        "Seconds an upload waits at most for room in decode_pixel_budget."))
    uploads_per_hour: int = Field(default=200, ge=1, description="Per contributor.")
    client_uploads_per_hour: int = Field(default=600, ge=1, description="Uploads per client address hash.")
    registrations_per_hour: int = Field(default=10, ge=1, description="Per client address hash.")
    signins_per_hour: int = Field(default=30, ge=1, description="Failed and successful, per client address hash.")
    header_timeout_s: float = Field(default=10.0, gt=0, description="A request's line and headers, in full.")
    body_timeout_s: float = Field(default=120.0, gt=0, description=(
        "A request's body, in full (20 MiB at 1.4 Mbit/s)."))
    max_connections: int = Field(default=200, ge=1, description="Beyond it uvicorn answers 503.")
    public_origin: str | None = Field(None, description=(
        "The origin browsers reach the page at (https://optin.example.org); requests naming another Host are "
        "refused. None: any Host (a test machine)."))

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, origin: str | None) -> str | None:
        if origin is None:
            return None
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
                or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(f"{origin!r} is not an origin (give scheme://host[:port], e.g. https://optin.example.org)")
        return f"{parts.scheme}://{parts.netloc.lower()}"


class SourceOptions(_Strict):
    base_url: str | None = Field(None, description=(
        "Served URL of the store's files/ (for a Ray cluster whose workers do not share its disk); else file://."))
    limits: Limits = Field(Limits(), description="What one submitted image may be.")
    # Compared with the URL's host as written.
    allow_hosts: list[str] = Field(default_factory=list, description=(
        "Hosts a URL submission may name even when they resolve to a private, loopback or link-local address: "
        "\"images.intranet\" (http and https on their default ports) or \"http://images.intranet:8080\"."))
    fetch_timeout_s: float = Field(default=10.0, gt=0, description="One URL fetch in total, redirects included.")
    intake: IntakeLimits = Field(IntakeLimits(), description="What one intake server lets a stranger cost it.")

    @field_validator("allow_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        return [allowed_origin(h) for h in hosts]


def normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def allowed_origin(entry: str) -> str:
    """An ``allow_hosts`` entry as written in its canonical form: ``host`` or ``scheme://host:port``."""
    problem = (f"{entry!r} is neither a host name (images.example.org) nor scheme://host:port "
               "(http://images.example.org:8080)")
    if "://" not in entry:
        host = normalize_host(entry)
        if not host or (any(c in host for c in "/:@ ?#[]") and not _is_ipv6(host)):
            raise ValueError(problem)
        return host
    try:
        parts = urlsplit(entry.strip())
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(problem)
    port = port or (443 if parts.scheme == "https" else 80)
    return origin_key(parts.scheme, normalize_host(parts.hostname), port)


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def origin_key(scheme: str, host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def parse(options: dict[str, Any], where: str) -> SourceOptions:
    try:
        return SourceOptions.model_validate(options)
    except ValidationError as e:
        problems = "; ".join(f"options.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in e.errors(include_input=False))
        raise OptinError(f"{where}: {problems}") from None


def from_manifest(path: Path = DEFAULT_MANIFEST) -> SourceOptions:
    from curate.config import load_manifest

    return parse(load_manifest(path).options, str(path))


def from_pipeline(pipeline_file: Path) -> tuple[SourceOptions, list[str]]:
    """The opt-in source's options in a pipeline (manifest merged with the pipeline's entry) and its
    metadata paths (the store folders), as written: ``{out}`` variables are left to the run."""
    from curate.config import load_manifest, load_pipeline, manifest_path

    base = pipeline_file.resolve().parent
    pipeline = load_pipeline(pipeline_file)
    for i, entry in enumerate(pipeline.sources):
        path = manifest_path(entry.manifest, base)
        manifest = load_manifest(path)
        if manifest.adapter != ADAPTER:
            continue
        if entry.metadata is not None:
            stores = [str((base / m).resolve()) for m in entry.metadata]
        else:
            stores = [str((path.parent / m).resolve()) for m in manifest.metadata]
        return parse({**manifest.options, **entry.options}, f"{pipeline_file}: sources[{i}]"), stores
    raise OptinError(f"{pipeline_file}: no source with adapter {ADAPTER!r}")
