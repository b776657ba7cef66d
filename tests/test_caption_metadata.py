"""Metadata captions on the real fixture records of every source, and the cleaning rules behind them."""

import json
import re
from pathlib import Path

import pytest

from curate import records
from curate.caption import CaptionConfig, Captioner
from curate.captioners.config import DEFAULT_PLACEHOLDERS, MetadataCaptions, SourceCaptions
from curate.captioners.text import cap
from curate.sources import load_adapter
from curate.sources._html import strip_html

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
SOURCES = {
    "aic": FIXTURES / "art-institute-of-chicago" / "artworks",
    "cleveland": FIXTURES / "cleveland-museum-of-art" / "artworks.jsonl",
    "commons": FIXTURES / "wikimedia-commons" / "pages.jsonl",
    "finna": FIXTURES / "finna" / "records.jsonl",
    "flickr": FIXTURES / "flickr" / "photos.jsonl",
    "met": FIXTURES / "metropolitan-museum-of-art" / "objects.jsonl",
    "nga": FIXTURES / "national-gallery-of-art",
    "smithsonian": FIXTURES / "smithsonian-open-access" / "records.jsonl",
}
MARKUP = re.compile(r"<[^>]*>|&[#\w]+;")
PLACEHOLDER_WORDS = re.compile(r"\b(None|null|Unknown|n\.d\.|NaN|Untitled)\b")
BROKEN_PUNCTUATION = re.compile(r"\s[,.;:]|,\s*,|,\.|^\W|[,;:]$")


def captioned(source, config=CaptionConfig(), **options):
    table = records.to_table(load_adapter(source)(SOURCES[source], source, options))
    return [r for r in Captioner(config)(table).to_pylist() if r["status"] == records.PENDING]


def words(value):
    """Text as a reader sees it (Met titles carry <i> markup), compared case-blind."""
    return strip_html(value).casefold()


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_fixture_captions_are_clean_and_name_title_and_creator(source):
    rows = captioned(source)
    assert rows, f"{source}: the fixture has no pending records"
    for row in rows:
        caption = row["caption"]
        assert caption and row["caption_origin"] == "metadata", row["key"]
        assert not MARKUP.search(caption), caption
        assert not PLACEHOLDER_WORDS.search(caption), caption
        assert not BROKEN_PUNCTUATION.search(caption), caption
        assert len(caption) <= CaptionConfig().max_chars
        for field in ("title", "creator"):
            value = row[field]
            if value and words(value) not in DEFAULT_PLACEHOLDERS:
                assert words(value) in words(caption), (field, value, caption)
        entries = json.loads(row["captions"])
        assert entries[0] == {"text": caption, "origin": "metadata"}


def test_museum_fields_read_naturally():
    by_title = {r["title"]: r["caption"] for r in captioned("met")}
    assert by_title["Fish"] == "Fish, oil on canvas, by William Merritt Chase, by 1910"
    # No creator: the culture says where the work comes from.
    assert by_title["Teapot"] == "Teapot, porcelain, Chinese, 1730–70"
    nga = {r["title"]: r["caption"] for r in captioned("nga")}
    # NGA's assistive text is written to describe the image: it follows the tombstone line.
    assert nga["Le Pont-Neuf, Paris"] == ('Le Pont-Neuf, Paris, etching, by Charles Méryon, 1872. A stone bridge of '
                                          'many arches, "Pont-Neuf", crossing the Seine, with crowds on the quay.')


def test_commons_caption_is_title_creator_date_and_description_without_repeats():
    by_id = {r["title"]: r["caption"] for r in captioned("commons")}
    # The timestamp is cut to its date; the description follows the title.
    assert by_id["Zoo Praha, Africký dům, z lávky (01)"] == (
        "Zoo Praha, Africký dům, z lávky (01), by ŠJů, 2015-09-08. Prague-Troja, Czech Republic. Prague Zoo. "
        "Footbridge over Pod Hrachovkou street and Africa House.")
    # A description that is a piece of the title, and a date the title states, are said once.
    assert by_id["Naturalis Biodiversity Center - RMNH.MAM.38761 pal - Myotis blythii - skull"] == \
        "Naturalis Biodiversity Center - RMNH.MAM.38761 pal - Myotis blythii - skull"
    assert by_id["Smålenenes amt nr 150: Kart over Hölen, 1871"] == \
        "Smålenenes amt nr 150: Kart over Hölen, 1871, by T. M. Langli"


def row_with(source="local", meta=None, **fields):
    return records.candidate(source, "1", meta=meta or {}, **fields)


@pytest.mark.parametrize("fields, meta, expected", [
    ({"title": "Untitled", "creator": "Mark Rothko", "date": "1960"}, {"medium": "Oil on canvas"},
     "Oil on canvas, by Mark Rothko, 1960"),
    ({"title": "IMG_2041", "creator": "Unknown", "date": "n.d."}, {"description": "<p>A red barn &amp; a silo</p>"},
     "A red barn & a silo"),
    ({"title": "Harbour at dusk", "creator": " [unknown] ", "date": "2019-05-04T10:11:12Z"},
     {"description": "Harbour at Dusk."}, "Harbour at dusk, 2019-05-04"),
    ({"title": "Mill\n  pond", "creator": "None", "date": "?"}, {}, "Mill pond"),
    ({"title": "Untitled", "creator": "NULL", "date": "n.d."}, {}, None),
])
def test_placeholders_markup_and_repeats_never_reach_a_caption(fields, meta, expected):
    [row] = Captioner(CaptionConfig())(records.to_table([row_with(meta=meta, **fields)])).to_pylist()
    assert row["caption"] == expected
    assert row["caption_origin"] == ("metadata" if expected else None)


COMMONS_MULTILINGUAL = {"description": {"de": "Ein <b>Turm</b> am Meer", "en": "A tower by the sea",
                                        "fi": "Torni meren rannalla"}}


@pytest.mark.parametrize("settings, expected", [
    (MetadataCaptions(), [("en", "A tower by the sea"), ("de", "Ein Turm am Meer"), ("fi", "Torni meren rannalla")]),
    (MetadataCaptions(languages=["fi", "de"]),
     [("fi", "Torni meren rannalla"), ("de", "Ein Turm am Meer"), ("en", "A tower by the sea")]),
    (MetadataCaptions(all_languages=False), [("en", "A tower by the sea")]),
])
def test_multilingual_description_gives_a_caption_per_language_tagged(settings, expected):
    row = row_with("commons", meta=COMMONS_MULTILINGUAL, title="Torre Ferrer", creator="Dulceld69")
    [out] = Captioner(CaptionConfig(metadata=settings))(records.to_table([row])).to_pylist()
    entries = json.loads(out["captions"])
    assert [(e["lang"], e["text"]) for e in entries] == \
        [(lang, f"Torre Ferrer, by Dulceld69. {text}") for lang, text in expected]
    assert out["caption"] == entries[0]["text"]


def test_language_tag_only_where_the_description_shows():
    # Equal to the title in every language: dropped, so no caption claims a language.
    row = row_with("commons", meta={"description": {"en": "Torre Ferrer", "es": "Torre Ferrer"}},
                   title="Torre Ferrer")
    [out] = Captioner(CaptionConfig())(records.to_table([row])).to_pylist()
    assert json.loads(out["captions"]) == [{"text": "Torre Ferrer", "origin": "metadata"}]


def test_aic_cc_by_description_stays_out_unless_the_pipeline_opts_in():
    cc_by = "Just as the Giants"
    default = {r["title"]: r["caption"] for r in captioned("aic")}["The Fall of the Giants"]
    assert cc_by not in default
    opted = CaptionConfig(metadata=MetadataCaptions(include_cc_by_description=True), max_chars=400)
    caption = {r["title"]: r["caption"] for r in captioned("aic", opted)}["The Fall of the Giants"]
    assert caption.startswith("The Fall of the Giants, etching with drypoint in black on ivory laid paper, "
                              "by Salvator Rosa, 1663. Just as the Giants—Gaia’s offspring—attempt")
    assert not MARKUP.search(caption)


def test_pipeline_overrides_a_sources_fields_and_templates():
    wall = MetadataCaptions(sources={"cleveland": SourceCaptions(
        fields={"description": ["wall_description"]}, templates=["{title}[, {culture}]. {description}"])})
    rows = captioned("cleveland", CaptionConfig(metadata=wall, max_chars=120))
    call = next(r["caption"] for r in rows if r["title"] == "The Call")
    # The museum's <em>The Call</em> is plain text; the cut falls at a clause end.
    assert call == ("The Call, France, late 19th-early 20th Century. Painted on a remote island in Polynesia a "
                    "year before the artist's death")
    # A source without a description has no caption from this template; the record is not captioned.
    assert all(r["caption"] is None or r["caption"].startswith(r["title"]) for r in rows)


def test_overrides_must_name_a_source_of_the_pipeline():
    config = CaptionConfig(metadata=MetadataCaptions(sources={"cleveland_typo": SourceCaptions(templates=["{title}"])}))
    with pytest.raises(ValueError, match=r"cleveland_typo.*not sources of this pipeline \(cleveland, met\)"):
        Captioner(config, adapters={"cleveland": "cleveland", "met": "met"})


def test_source_names_map_to_their_adapters_defaults():
    row = row_with("met_2024", meta={"medium": "Porcelain", "culture": "Chinese"}, title="Bowl", date="1736–95")
    table = records.to_table([row])
    [as_met] = Captioner(CaptionConfig(), adapters={"met_2024": "met"})(table).to_pylist()
    assert as_met["caption"] == "Bowl, porcelain, Chinese, 1736–95"
    [generic] = Captioner(CaptionConfig())(table).to_pylist()
    assert generic["caption"] == "Bowl, 1736–95"


@pytest.mark.parametrize("text, limit, expected", [
    ("Short enough.", 40, "Short enough."),
    ("A harbour at dusk. Boats rest on the water near the old pier, gulls overhead", 60,
     "A harbour at dusk. Boats rest on the water near the old pier"),
    ("Smoke Tree Wash, ca. 5 miles northeast of Cottonwood Springs", 30, "Smoke Tree Wash"),
    ("A tower by the sea. Another sentence follows it here", 25, "A tower by the sea."),
    ("ein sehr langer Satz ohne jedes Satzzeichen bis zum Ende", 30, "ein sehr langer Satz ohne"),
    ("東京の古い港の夜景と漁船の写真です", 8, "東京の古い港の夜"),
])
def test_long_captions_are_cut_at_a_natural_boundary(text, limit, expected):
    assert cap(text, limit) == expected
