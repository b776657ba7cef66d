"""Options of the opt-in source: one typed set for the adapter and the intake.

They live where every source's options live, in ``manifests/optin.yaml`` and in a
pipeline's entry for the source, so "a pipeline allows a host by name" means exactly
that pipeline's ``options.allow_hosts``. The intake (web app, ``cleanroom optin submit``)
reads them from the manifest, or from a pipeline given with ``--pipeline``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curate import data
from curate.optin.errors import OptinError

ADAPTER = "optin"
DEFAULT_MANIFEST = data.MANIFESTS / "optin.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    max_bytes: int = Field(default=20 * 2**20, ge=1)  # per image, as uploaded or fetched
    # Checked from the header before any pixel is decoded: a 50 kB PNG can claim 100k x 100k.
    max_pixels: int = Field(default=40_000_000, ge=1)


class SourceOptions(_Strict):
    base_url: str | None = None  # adapter: serve URL of the store's files/ (for a Ray cluster); else file://
    limits: Limits = Limits()
    # Host names a URL submission may name even when they resolve to a private, loopback or
    # link-local address (an intranet image server). Compared with the URL's host as written.
    allow_hosts: list[str] = Field(default_factory=list)
    fetch_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("allow_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            bracketed_ipv6 = host.startswith("[") and host.endswith("]")
            if not host or (any(c in host for c in "/:@ ") and not bracketed_ipv6):
                raise ValueError(f"{host!r} is not a host name (give names like images.example.org, no scheme or port)")
        return [normalize_host(h) for h in hosts]


def normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


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
