"""Pipeline and manifest validation: errors name the file and the field."""

from pathlib import Path

import pytest

from curate.config import ConfigError, MANIFESTS_DIR, PIPELINES_DIR, load_manifest, pipeline_path, resolve
from curate.sources import ADAPTERS, options_model

ROOT = Path(__file__).resolve().parents[1]


def write(path, text):
    path.write_text(text)
    return path


def test_every_shipped_manifest_and_pipeline_is_valid(tmp_path):
    for manifest in sorted(MANIFESTS_DIR.glob("*.yaml")):
        assert load_manifest(manifest).adapter
    config = resolve(ROOT / "pipelines" / "demo.yaml",
                     {"out": str(tmp_path), "demo": "", "demo_url": "http://x/", "demo_models": "/m"})
    assert config.pipeline.scoring.aesthetic.weights == "/m/aesthetic-mlp.pth"
    assert "{creator}" in config.pipeline.captions.combined_template  # templates keep their own braces
    assert [s.source for s in config.sources] == ["met", "commons", "local"]
    assert config.sources[2].options["base_url"] == "http://x/local/"
    assert config.sources[0].metadata == [str(tmp_path / "demo-corpus/met/objects.jsonl")]


def test_every_adapter_declares_strict_options_and_every_manifest_fits_them():
    for adapter in ADAPTERS:
        assert options_model(adapter).model_config["extra"] == "forbid", adapter
    for manifest in sorted(MANIFESTS_DIR.glob("*.yaml")):
        loaded = load_manifest(manifest)
        options_model(loaded.adapter).model_validate(loaded.options)


@pytest.mark.parametrize("options, problem", [
    ("{additional_image: false}", r"options\.additional_image: Extra inputs are not permitted"),
    ("{additional_images: sometimes}", r"options\.additional_images: Input should be a valid boolean"),
])
def test_a_bad_option_in_a_pipeline_names_the_file_the_source_and_the_field(tmp_path, options, problem):
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources:\n  - manifest: met\n    metadata: [m.jsonl]\n"
                                          f"    options: {options}\n")
    with pytest.raises(ConfigError, match=rf"p\.yaml: sources\[0\] \(met\): {problem}"):
        resolve(pipeline, {"out": str(tmp_path)})


def test_a_bad_option_in_a_manifest_names_the_manifest_and_the_field(tmp_path):
    write(tmp_path / "m.yaml", "source: mine\nname: Mine\nadapter: optin\noptions: {limits: {max_bytes: big}}\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: options: limits\.max_bytes: Input should be a valid integer"):
        load_manifest(tmp_path / "m.yaml")


def test_an_option_made_bad_by_a_run_variable_is_refused_at_load(tmp_path):
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources:\n  - manifest: cleveland\n    metadata: [m.jsonl]\n"
                                          "    options: {rendition: '{size}'}\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: sources\[0\] \(cleveland\): options\.rendition: Input should be "
                                          r"'web', 'print' or 'full'"):
        resolve(pipeline, {"out": str(tmp_path), "size": "huge"})


def test_earlier_runs_to_dedup_against_are_relative_to_the_pipeline(tmp_path):
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources: [{manifest: met, metadata: [m.jsonl]}]\n"
                                          "scoring: {clip: {model: cleanroom-tiny-clip}}\n"
                                          "dedup: {near: {clip: {against: [{out: runs/first}]}}}\n")
    config = resolve(pipeline, {"out": str(tmp_path)})
    assert config.pipeline.dedup.near.clip.against[0].out == str(tmp_path / "runs" / "first")


def test_near_dedup_without_scoring_is_refused(tmp_path):
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources: [{manifest: met}]\n"
                                          "dedup: {near: {phash: {max_distance: 4}}}\n")
    with pytest.raises(ConfigError, match="dedup.near needs a scoring section"):
        resolve(pipeline, {"out": str(tmp_path)})


def test_unknown_field_names_file_and_field(tmp_path):
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources: [{manifest: met}]\nfilters: {resolution: {min_sid: 3}}\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: filters: resolution\.min_sid: Extra inputs"):
        resolve(pipeline, {"out": str(tmp_path)})


def test_bad_fetch_setting_in_a_source_names_the_source(tmp_path):
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources:\n  - manifest: met\n    metadata: [m.jsonl]\n"
                                          "    fetch: {timeout: soon}\n")
    with pytest.raises(ConfigError, match=r"sources\[0\] \(met\) fetch"):
        resolve(pipeline, {"out": str(tmp_path)})


def test_unknown_adapter_and_run_variable_are_refused(tmp_path):
    write(tmp_path / "m.yaml", "source: mine\nname: Mine\nadapter: instagram\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: adapter: .*unknown adapter 'instagram'"):
        load_manifest(tmp_path / "m.yaml")
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources:\n  - manifest: met\n    metadata: ['{data}/a.jsonl']\n")
    with pytest.raises(ConfigError, match=r"unknown run variable"):
        resolve(pipeline, {"out": str(tmp_path)})


def test_missing_policy_file_is_named(tmp_path):
    pipeline = write(tmp_path / "p.yaml", "name: x\npolicy: ./nope.yaml\nsources: [{manifest: met}]\n")
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        resolve(pipeline, {"out": str(tmp_path)})


@pytest.mark.parametrize("template", ["'{title:>9999}'", "'{title!r}'", "'{0}'", "'{title}[ by {creator}'"])
def test_a_template_that_is_not_plain_fields_is_refused_at_load(tmp_path, template):
    write(tmp_path / "m.yaml", f"source: mine\nname: Mine\nadapter: local\n"
                               f"attribution: {template}\n")
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources: [{manifest: ./m.yaml, metadata: [m.jsonl]}]\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: attribution: .*template"):
        resolve(pipeline, {"out": str(tmp_path)})
    captions = f"captions:\n  metadata:\n    sources:\n      met: {{templates: [{template}]}}\n"
    pipeline = write(tmp_path / "p.yaml", "name: x\nsources: [{manifest: met, metadata: [m.jsonl]}]\n" + captions)
    with pytest.raises(ConfigError, match=r"p\.yaml: captions\.metadata\.sources\.met\.templates: .*template"):
        resolve(pipeline, {"out": str(tmp_path)})


def test_a_bare_pipeline_name_is_a_bundled_pipeline():
    assert pipeline_path("demo") == PIPELINES_DIR / "demo.yaml" and pipeline_path("demo").is_file()
    assert pipeline_path("demo.yaml") == Path("demo.yaml")  # a file name is a path, as for manifests
    assert pipeline_path("pipelines/demo") == Path("pipelines/demo")
    with pytest.raises(ConfigError, match=r"no bundled pipeline named 'dmeo' \(bundled: demo, "):
        pipeline_path("dmeo")
