"""Shared set-up for the opt-in tests: a store, contributors with consent, images made here."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate import records, stats
from curate.optin import consent
from curate.optin.consent import Scope
from curate.optin.layout import REVOKED
from curate.optin.store import Contributor, Store
from curate.sources import ADAPTERS


@pytest.fixture(autouse=True)
def optin_registered(monkeypatch):
    """Until the lead registers them: the adapter in ADAPTERS, the reason in records.REASONS and
    stats.STAGE_OF_REASON. Each patch is a no-op once the real entry exists."""
    monkeypatch.setitem(ADAPTERS, "optin", "curate.sources.optin")
    if REVOKED not in records.REASONS[records.REJECTED]:
        monkeypatch.setitem(records.REASONS, records.REJECTED, (*records.REASONS[records.REJECTED], REVOKED))
    monkeypatch.setitem(stats.STAGE_OF_REASON, REVOKED, stats.STAGE_OF_REASON.get(REVOKED, "ingest"))


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
