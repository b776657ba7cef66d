import pytest

from curate.templates import render


@pytest.mark.parametrize("values, expected", [
    ({"title": "Irises", "creator": "Vincent van Gogh", "date": "1889"}, "Irises, by Vincent van Gogh, 1889"),
    ({"title": "Irises", "creator": None, "date": "1889"}, "Irises, 1889"),
    ({"title": "Irises", "creator": "None", "date": ""}, "Irises"),
    ({"title": "  Irises ", "creator": "Unknown", "date": None}, "Irises"),
])
def test_optional_parts_vanish_with_their_punctuation(values, expected):
    assert render("{title}[, by {creator}][, {date}]", values) == expected


def test_missing_required_field_gives_none():
    assert render("{title}[, by {creator}]", {"title": None, "creator": "Hokusai"}) is None
