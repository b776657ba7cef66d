from __future__ import annotations

from pathlib import Path

import pytest

from curate import licenses, records, stages, verdict
from curate.licenses import LicenseFileError, Policy, normalize, normalize_any

# Evidence as sources write it -> the id it must give.
SPELLINGS = [
    ("CC-BY-SA 4.0", "CC-BY-SA-4.0"),
    ("cc by-sa 4.0", "CC-BY-SA-4.0"),
    ("Attribution-ShareAlike 4.0 International", "CC-BY-SA-4.0"),
    ("Creative Commons Attribution-Share Alike 3.0", "CC-BY-SA-3.0"),
    ("Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 International License", "CC-BY-NC-ND-4.0"),
    ("CC BY-NC 2.0", "CC-BY-NC-2.0"),
    ("CC BY-SA 3.0 es", "CC-BY-SA-3.0-ES"),
    ("cc-by-sa-3.0-de", "CC-BY-SA-3.0-DE"),
    ("CC BY 2.0 FR", "CC-BY-2.0-FR"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("CC-BY-NC-ND-2.0", "CC-BY-NC-ND-2.0"),
    ("cc0", "CC0-1.0"),
    ("CC0", "CC0-1.0"),
    ("CC0 1.0", "CC0-1.0"),
    ("CC0-1.0", "CC0-1.0"),
    ("Creative Commons Zero, Public Domain Dedication", "CC0-1.0"),
    ("Public Domain Dedication (CC0)", "CC0-1.0"),
    ("Public domain", "public-domain"),
    ("  public   DOMAIN ", "public-domain"),
    ("pd", "public-domain"),
    ("PD", "public-domain"),
    ("Public Domain Mark", "PDM-1.0"),
    ("Public Domain Mark 1.0", "PDM-1.0"),
    ("No restrictions", "no-known-copyright"),
    ("No known copyright restrictions", "no-known-copyright"),
    ("United States Government Work", "us-government-work"),
    ("All Rights Reserved", "all-rights-reserved"),
    ("Copyrighted", "all-rights-reserved"),
    ("©", "all-rights-reserved"),
    ("&copy;", "all-rights-reserved"),
    ("opt-in", "opt-in"),
    ("permission-granted", "permission-granted"),
    ("GFDL", "GFDL"),
]

URLS = [
    ("http://creativecommons.org/licenses/by/4.0/deed.fi", "CC-BY-4.0"),
    ("https://creativecommons.org/licenses/by/4.0", "CC-BY-4.0"),
    ("https://www.creativecommons.org/licenses/by-sa/4.0/legalcode", "CC-BY-SA-4.0"),
    ("//creativecommons.org/licenses/by-nc/3.0/", "CC-BY-NC-3.0"),
    ("creativecommons.org/licenses/by-nd/2.5/deed.en", "CC-BY-ND-2.5"),
    ("https://creativecommons.org/licenses/by-nd-nc/1.0/", "CC-BY-NC-ND-1.0"),
    ("http://creativecommons.org/publicdomain/zero/1.0/deed.en", "CC0-1.0"),
    ("https://creativecommons.org/publicdomain/zero/1.0/legalcode.de", "CC0-1.0"),
    ("https://creativecommons.org/publicdomain/mark/1.0/", "PDM-1.0"),
    ("https://creativecommons.org/licenses/by-sa/3.0/es/deed.en", "CC-BY-SA-3.0-ES"),
    ("https://creativecommons.org/licenses/by-sa/3.0/es/", "CC-BY-SA-3.0-ES"),
    ("https://creativecommons.org/licenses/by/4.0/?ref=chooser#x", "CC-BY-4.0"),
    ("https://www.flickr.com/commons/usage/", "no-known-copyright"),
    ("http://www.usa.gov/copyright.shtml", "us-government-work"),
]

HTML = [
    ('<a href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a>', "CC-BY-4.0"),
    ('<span class="licensetpl_short">Public domain</span>', "public-domain"),
    ('<span class="licensetpl_short">CC BY-SA 3.0 es</span>', "CC-BY-SA-3.0-ES"),
    # The visible text has no version; the link target does.
    ("<a href='https://creativecommons.org/licenses/by-sa/3.0/'>CC BY-SA</a>", "CC-BY-SA-3.0"),
    ('<a href="https://creativecommons.org/publicdomain/zero/1.0/deed.en">CC0 1.0 Universal</a>', "CC0-1.0"),
]

UNRECOGNISED = [
    "CC BY-SA",  # no version: not guessed
    "Attribution License",  # Flickr's name; its version lives in Flickr's id table
    "Attribution-NonCommercial-ShareAlike License",
    "CC BY 4.0 fi",  # 4.0 has no ports
    "CC BY-SA 5.0",
    "CC BY-SA 3.0, 2.5",  # several versions: not one license
    "museovirasto.CC0641BB5337F541CBD19169838BAC1F",  # "CC0" inside an id is hex
    "Public domain in some countries",
    "https://example.org/licenses/by/4.0/",
    "https://creativecommons.org/licenses/by-xx/4.0/",
    "",
    "   ",
    None,
    9,
]


@pytest.mark.parametrize(("value", "expected"), SPELLINGS + URLS + HTML)
def test_normalize(value: str, expected: str) -> None:
    assert normalize(value) == expected


@pytest.mark.parametrize("value", UNRECOGNISED)
def test_unrecognised_evidence_gives_no_id(value: object) -> None:
    assert normalize(value) is None


# Every license value in the real Commons and Finna fixtures (extmetadata License,
# LicenseShortName, LicenseUrl, UsageTerms; imageRights.copyright, imageRights.link).
FIXTURE_VALUES = [
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-3.0-es", "CC-BY-SA-3.0-ES"),
    ("cc-by-sa-3.0-de", "CC-BY-SA-3.0-DE"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("cc0", "CC0-1.0"),
    ("pd", "public-domain"),
    ("CC BY 4.0", "CC-BY-4.0"),
    ("CC BY-SA 3.0 es", "CC-BY-SA-3.0-ES"),
    ("CC BY-SA 3.0 de", "CC-BY-SA-3.0-DE"),
    ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
    ("CC0", "CC0-1.0"),
    ("Public domain", "public-domain"),
    ("No restrictions", "no-known-copyright"),
    ("http://creativecommons.org/publicdomain/zero/1.0/deed.en", "CC0-1.0"),
    ("https://creativecommons.org/licenses/by-sa/3.0/es/deed.en", "CC-BY-SA-3.0-ES"),
    ("https://creativecommons.org/licenses/by-sa/4.0", "CC-BY-SA-4.0"),
    ("https://creativecommons.org/licenses/by/4.0", "CC-BY-4.0"),
    ("Creative Commons Attribution 4.0", "CC-BY-4.0"),
    ("Creative Commons Attribution-Share Alike 3.0 es", "CC-BY-SA-3.0-ES"),
    ("Creative Commons Attribution-Share Alike 4.0", "CC-BY-SA-4.0"),
    ("Creative Commons Zero, Public Domain Dedication", "CC0-1.0"),
    ("No known copyright restrictions", "no-known-copyright"),
    ("http://creativecommons.org/licenses/by/4.0/deed.fi", "CC-BY-4.0"),
]


@pytest.mark.parametrize(("value", "expected"), FIXTURE_VALUES)
def test_fixture_license_values(value: str, expected: str) -> None:
    assert normalize(value) == expected


# Flickr's license names map to ids only through Flickr's own table; their URLs are enough.
@pytest.mark.parametrize(("name", "url", "expected"), [
    ("All Rights Reserved", "", "all-rights-reserved"),
    ("Attribution-NonCommercial-ShareAlike License", "https://creativecommons.org/licenses/by-nc-sa/2.0/",
     "CC-BY-NC-SA-2.0"),
    ("Attribution License", "https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0"),
    ("No known copyright restrictions", "https://www.flickr.com/commons/usage/", "no-known-copyright"),
    ("United States Government Work", "http://www.usa.gov/copyright.shtml", "us-government-work"),
    ("Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/", "PDM-1.0"),
])
def test_flickr_license_table(name: str, url: str, expected: str) -> None:
    assert normalize_any(name, url)[0] == expected


def test_normalize_any_returns_the_value_that_matched() -> None:
    assert normalize_any(None, "", "CC BY-SA", "CC BY-SA 3.0 es") == ("CC-BY-SA-3.0-ES", "CC BY-SA 3.0 es")
    # Nothing recognised: the first evidence seen is kept for the rejection detail.
    assert normalize_any(None, "Our terms", "Some terms") == (None, "Our terms")
    assert normalize_any(None, " ") == (None, None)


def test_cc_ids_cover_every_kind_and_version() -> None:
    ids = set(licenses.registry())
    for kind in ("BY", "BY-SA", "BY-NC", "BY-ND", "BY-NC-SA", "BY-NC-ND"):
        for version in ("1.0", "2.0", "2.5", "3.0", "4.0"):
            assert f"CC-{kind}-{version}" in ids
    assert {"CC0-1.0", "PDM-1.0", "public-domain", "no-known-copyright", "us-government-work",
            "all-rights-reserved", "permission-granted", "opt-in"} <= ids


def test_registry_entries() -> None:
    cc_by = licenses.get("CC-BY-4.0")
    assert (cc_by.url, cc_by.family, cc_by.attribution_required) == (
        "https://creativecommons.org/licenses/by/4.0/", "cc-by", True)
    cc0 = licenses.get("CC0-1.0")
    assert (cc0.family, cc0.allowed_for_training, cc0.attribution_required) == ("cc0", True, False)
    assert licenses.get("no-known-copyright").family == "no-known-restrictions"
    assert licenses.get("us-government-work").family == "us-government"
    assert licenses.get("all-rights-reserved").family == "copyrighted"


@pytest.mark.parametrize(("port", "url"), [
    ("CC-BY-SA-3.0-ES", "https://creativecommons.org/licenses/by-sa/3.0/es/"),
    ("CC-BY-SA-3.0-DE", "https://creativecommons.org/licenses/by-sa/3.0/de/"),
    ("CC-BY-2.0-FR", "https://creativecommons.org/licenses/by/2.0/fr/"),
    ("CC-BY-NC-ND-2.5-IT", "https://creativecommons.org/licenses/by-nc-nd/2.5/it/"),
])
def test_ports_resolve_to_their_base_with_their_own_url(port: str, url: str) -> None:
    license = licenses.get(port)
    base = licenses.get(license.port_of or "")
    assert license.url == url
    assert (license.family, license.attribution_required, license.allowed_for_training) == (
        base.family, base.attribution_required, base.allowed_for_training)
    assert port.startswith(base.id)


@pytest.mark.parametrize("bad", ["CC-BY-4.0-FI", "CC-BY-SA-3.0-ESP", "CC-BY-9.0", "cc-by-4.0", "MIT"])
def test_get_names_the_unknown_id(bad: str) -> None:
    with pytest.raises(KeyError, match=bad):
        licenses.get(bad)


@pytest.mark.parametrize("license_id", ["CC0-1.0", "PDM-1.0", "public-domain", "permission-granted", "opt-in"])
def test_default_policy_admits(license_id: str) -> None:
    assert Policy.default().decide(license_id) == (
        True, "", f"license {license_id} (family {licenses.get(license_id).family}) is allowed by policy default")


@pytest.mark.parametrize(("license_id", "reason"), [
    ("CC-BY-4.0", "license_not_allowed"),
    ("CC-BY-SA-4.0", "license_not_allowed"),
    ("CC-BY-SA-3.0-ES", "license_not_allowed"),
    ("CC-BY-NC-4.0", "license_not_allowed"),
    ("all-rights-reserved", "license_not_allowed"),
    ("no-known-copyright", "license_not_allowed"),
    ("us-government-work", "license_not_allowed"),
    (None, "license_unknown"),
    ("not-a-license", "license_unknown"),
])
def test_default_policy_rejects(license_id: str | None, reason: str) -> None:
    allowed, why, detail = Policy.default().decide(license_id)
    assert (allowed, why) == (False, reason)
    assert reason in stages.reasons(records.REJECTED)
    if license_id == "CC-BY-NC-4.0":
        assert detail == "license CC-BY-NC-4.0 (family cc-by-nc) is not allowed by policy default"


def test_default_policy_rank_prefers_cc0_and_puts_unallowed_last() -> None:
    policy = Policy.default()
    ranks = [policy.rank(i) for i in ("CC0-1.0", "PDM-1.0", "permission-granted", "opt-in", "CC-BY-4.0", None)]
    assert ranks == sorted(ranks)
    assert ranks[0] < ranks[1] < ranks[2] < ranks[3] < ranks[4] == ranks[5]
    assert policy.rank("public-domain") == policy.rank("PDM-1.0")


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy-test.yaml"
    path.write_text(text)
    return path


def test_policy_ids_allow_and_deny(tmp_path: Path) -> None:
    policy = Policy.load(_policy(tmp_path, (
        "name: strict\n"
        "allow_families: [cc0, cc-by-sa]\n"
        "allow_ids: [us-government-work]\n"
        "deny_ids: [CC-BY-SA-3.0]\n"
        "rank: {cc0: 0}\n")))
    assert policy.decide("us-government-work")[0]
    assert policy.decide("CC-BY-SA-4.0")[0]
    # A port answers to its base id.
    assert policy.decide("CC-BY-SA-3.0-ES") == (
        False, "license_not_allowed", "license CC-BY-SA-3.0-ES (family cc-by-sa) is denied by policy strict")
    assert policy.rank("CC0-1.0") < policy.rank("us-government-work") < policy.rank("CC-BY-SA-3.0")


@pytest.mark.parametrize(("text", "names"), [
    ("name: x\nallow_families: [cc0, cc-bye]\n", ["allow_families[1]", "cc-bye"]),
    ("name: x\nallow_families: [cc0]\nallow_ids: [CC-BY-9.0]\n", ["allow_ids[0]", "CC-BY-9.0"]),
    ("name: x\nallow_families: [cc0]\nrank: {cco: 0}\n", ["rank[0]", "cco"]),
    ("name: x\nallow_families: [cc0]\nallow_ids: [opt-in]\ndeny_ids: [opt-in]\n", ["opt-in"]),
    ("name: x\nallow_family: [cc0]\n", ["allow_family"]),
    ("name: x\nallow_families: cc0: [\n", ["invalid YAML"]),
    ("", ["(top level)"]),
])
def test_bad_policy_file_names_the_file_and_entry(tmp_path: Path, text: str, names: list[str]) -> None:
    path = _policy(tmp_path, text)
    with pytest.raises(LicenseFileError) as error:
        Policy.load(path)
    assert str(path) in str(error.value)
    for name in names:
        assert name in str(error.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(LicenseFileError, match="missing.yaml"):
        Policy.load(tmp_path / "missing.yaml")


def test_apply_policy() -> None:
    rows = [
        records.candidate("commons", "1", license="CC0-1.0", license_field="License", license_value="cc0"),
        records.candidate("commons", "2", license="CC-BY-SA-3.0-ES", license_field="LicenseShortName",
                          license_value="CC BY-SA 3.0 es", license_url="https://example.org/own-url"),
        records.candidate("commons", "3", license=None, license_field="LicenseShortName", license_value="Our terms"),
        records.rejected("commons", "4", "no_image", "metadata only", license="CC-BY-4.0"),
        records.candidate("local", "5", license="opt-in", consent_id="c-1"),
    ]
    out = verdict.apply_policy(records.to_table(rows), Policy.default())
    assert out.schema == records.SCHEMA
    got = out.select(["status", "reason", "license_url", "detail"]).to_pylist()
    assert [(r["status"], r["reason"]) for r in got] == [
        ("pending", ""),
        ("rejected", "license_not_allowed"),
        ("rejected", "license_unknown"),
        ("rejected", "no_image"),  # terminal rows keep their fate
        ("rejected", "permission_unverified"),  # opt-in needs a consent in the store behind it
    ]
    assert got[0]["license_url"] == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert got[1]["license_url"] == "https://example.org/own-url"  # the source's own URL is kept
    assert got[3]["license_url"] == "https://creativecommons.org/licenses/by/4.0/"
    assert got[1]["detail"] == ("license CC-BY-SA-3.0-ES (family cc-by-sa) is not allowed by policy default "
                                "(from LicenseShortName 'CC BY-SA 3.0 es')")
    assert got[2]["detail"] == "LicenseShortName 'Our terms' is not a license we recognise"
    assert got[3]["detail"] == "metadata only"


def test_apply_policy_on_empty_table() -> None:
    assert verdict.apply_policy(records.empty_table(), Policy.default()).num_rows == 0
