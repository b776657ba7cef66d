"""The data folders cleanroom ships: the repository's ``licenses/``, ``manifests/`` and ``pipelines/``.

They stay top-level folders of the repository, where people edit them. setup.py maps each to a package
``curate.data.<folder>``, so a wheel installs it into site-packages beside the code and an editable install
reads the checkout's folder in place; either way it is found here, through importlib.resources, and never
relative to a source file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def folder(name: str) -> Path:
    """The bundled folder ``name`` as a directory on disk."""
    root = resources.files(f"{__name__}.{name}")
    if not isinstance(root, Path):  # paths to policies and manifests end up in run.yaml, so they must be files
        raise RuntimeError(f"{__name__}.{name} is not a folder on disk ({root!r}): install cleanroom unzipped")
    return root


LICENSES = folder("licenses")
MANIFESTS = folder("manifests")
PIPELINES = folder("pipelines")
