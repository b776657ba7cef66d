"""docs/pipeline-reference.md is what the config models say, and says how settings combine as resolve does."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from curate import config, reference

DOC = Path(__file__).resolve().parent.parent / "docs" / "pipeline-reference.md"


def test_the_committed_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == reference.reference(), (
        f"{DOC} is out of date with the config models: regenerate it with `{reference.COMMAND}` "
        "(from the repository root) and commit the result")


def test_every_field_has_a_type_default_and_description():
    rows = [line for line in reference.reference().splitlines() if line.startswith("| `")]
    undescribed = [row.split("|")[1].strip() for row in rows if row.rstrip().endswith("|  |")]
    assert len(rows) > 100  # every section made it in
    assert not undescribed, (f"fields without a description: {', '.join(undescribed)}; give each "
                             "Field(description=...) in its model")


def test_every_link_has_its_anchor():
    page = reference.reference()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', page))
    anchors |= {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", page, re.M)}
    targets = set(re.findall(r"\]\(#([^)]+)\)", page))
    assert targets and targets <= anchors, f"links to missing sections: {sorted(targets - anchors)}"
    ids = re.findall(r'<a id="([^"]+)"></a>', page)
    assert len(ids) == len(set(ids)), "a section is rendered twice"


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_settings_combine_as_the_reference_says(tmp_path):
    """The order the page documents: pipeline fetch < manifest fetch < source entry; options: manifest < entry."""
    (tmp_path / "images").mkdir()
    _write(tmp_path / "mine.yaml", {
        "source": "mine", "name": "Mine", "adapter": "local", "metadata": ["images"],
        "options": {"license": "CC0-1.0", "base_url": "http://127.0.0.1:8000/"},
        "fetch": {"thread_count": 4, "timeout": 30}})
    pipeline = _write(tmp_path / "pipeline.yaml", {
        "name": "p", "fetch": {"thread_count": 2, "timeout": 5, "retries": 3},
        "sources": [{"manifest": "mine.yaml", "options": {"base_url": "http://127.0.0.1:9000/"},
                     "fetch": {"timeout": 60}}]})
    (source,) = config.resolve(pipeline, {"out": str(tmp_path / "out")}).sources
    # The manifest's thread_count beats the pipeline's top-level one: the case the page warns about.
    assert (source.fetch.thread_count, source.fetch.timeout, source.fetch.retries) == (4, 60, 3)
    assert source.options == {"license": "CC0-1.0", "base_url": "http://127.0.0.1:9000/"}
    page = " ".join(reference.reference().split())
    assert "the pipeline's top-level `fetch:`, then the manifest's `fetch:`, then the source entry's `fetch:`" in page
