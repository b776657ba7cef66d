"""Shared set-up for the opt-in tests: a store, contributors with consent, images made here."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.optin import consent
from curate.optin.consent import Scope
from curate.optin.store import Contributor, Store


def picture(seed: int, width: int = 64, height: int = 48, fmt: str = "JPEG", **save: object) -> bytes:
    """Smooth random colours: distinct per seed."""
    rng = np.random.default_rng(seed)
    small = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "optin", create=True)


def contributor(store: Store, name: str, contact: str, credit: bool = True,
                model_release: bool = True) -> Contributor:
    """A web contributor who accepted the current consent text."""
    person, _ = store.register(name, contact, "web", with_token=True)
    store.add_consent(person.contributor_id, consent.current(),
                      Scope(training=True, model_release=model_release, credit=credit), {"channel": "test"})
    return person
