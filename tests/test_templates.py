import pytest

from curate.templates import MAX_CHARS, MAX_VALUE_CHARS, TemplateError, parse, render


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


@pytest.mark.parametrize("title", ["{title:>99999999999999999999}", "{title:*>50000000}", "{0}", "{creator}", "[x]",
                                   "{", "}}", "[{date}]", "{title!r}"])
def test_braces_and_brackets_in_values_are_literal(title):
    assert render("{title}[, by {creator}]", {"title": title, "creator": "Hokusai"}) == f"{title}, by Hokusai"
    assert render("[{title}][ by {creator}]", {"title": title, "creator": None}) == title


def test_values_and_lines_are_capped_at_a_word_end():
    long = "word " * 100_000
    line = render("{title}[, by {creator}]", {"title": long, "creator": long})
    assert len(line) <= MAX_CHARS and line.endswith("word…")
    assert len(render("{title}", {"title": "x" * 5000})) == MAX_VALUE_CHARS
    assert render("{title}", {"title": "short enough"}, max_chars=20) == "short enough"


@pytest.mark.parametrize("template", ["{title:>10}", "{title!r}", "{title.upper}", "{title[0]}", "{0}", "{}",
                                      "{title", "title}", "[{title}", "{title}]", "[[{title}]]"])
def test_templates_with_anything_but_plain_fields_are_refused(template):
    with pytest.raises(TemplateError, match="template"):
        parse(template)


def test_doubled_braces_are_literal_braces_in_a_template():
    assert render("{{{title}}}[ by {creator}]", {"title": "Irises", "creator": None}) == "{Irises}"
    assert parse("{title}[, {date}]").required == {"title"}
