"""Every adapter refuses options it does not know, or of the wrong type, before reading a line."""

from __future__ import annotations

import pytest

from curate.sources import ADAPTERS, load_adapter, options_model


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_an_unknown_option_is_refused_naming_source_and_field(adapter, tmp_path):
    with pytest.raises(ValueError, match=r"source mine: options\.sizez: Extra inputs are not permitted"):
        list(load_adapter(adapter)(tmp_path / "not-read", "mine", {"sizez": 3}))


@pytest.mark.parametrize("adapter, options, problem", [
    ("met", {"additional_images": [1]}, r"options\.additional_images: Input should be a valid boolean"),
    ("nga", {"views": "some"}, r"options\.views: Input should be 'primary' or 'all'"),
    ("optin", {"limits": {"max_pixels": 0}}, r"options\.limits\.max_pixels: Input should be greater than"),
])
def test_a_wrong_type_or_value_is_refused_naming_the_field(adapter, options, problem, tmp_path):
    with pytest.raises(ValueError, match=rf"source mine: {problem}"):
        list(load_adapter(adapter)(tmp_path / "not-read", "mine", options))


def test_adapters_take_their_parsed_options_too(tmp_path):
    options = options_model("local").model_validate({"license": "CC0-1.0"})
    (tmp_path / "a.jpg").write_bytes(b"")
    [row] = load_adapter("local")(tmp_path, "local", options)
    assert row["license"] == "CC0-1.0"
