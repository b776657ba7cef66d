"""Fuzz: conflicting and disguised license evidence, through each adapter that carries license text.

Every generated record puts a license the default policy refuses, in one of many disguises,
into one of the source's license-bearing fields, beside free licenses in the others; every
one must end rejected with a license reason. A control set of free-only records in the same
disguises must pass, so the test fails if the verdict simply refused everything.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

from curate import licenses, records, verdict
from curate.licenses import Policy
from curate.sources import commons, finna, flickr, local, smithsonian

CASES_PER_ADAPTER = 240
LICENSE_REASONS = {"license_conflict", "license_not_allowed", "license_unknown", "permission_unverified"}

# (text forms, url forms) of licenses the default policy refuses.
REFUSED = [
    (["CC BY-NC 4.0", "cc-by-nc-4.0", "Creative Commons Attribution-NonCommercial 4.0 International", "CC BY-NC"],
     ["https://creativecommons.org/licenses/by-nc/4.0/deed.en", "//creativecommons.org/licenses/by-nc/2.0/"]),
    (["CC BY-SA 3.0", "Attribution-ShareAlike 3.0 Unported", "cc-by-sa-3.0-de"],
     ["http://creativecommons.org/licenses/by-sa/3.0/legalcode"]),
    (["CC BY-NC-ND 2.0", "CC BY 4.0"], ["https://creativecommons.org/licenses/by-nd/4.0/"]),
    (["All rights reserved", "© 2019 Jane Doe", "Copyright", "Tous droits réservés"],
     ["https://rightsstatements.org/vocab/InC/1.0/"]),
    (["Non-commercial use only", "Editorial use only", "For personal use only", "Not for commercial use"],
     ["https://rightsstatements.org/page/NoC-NC/1.0/"]),
    (["GFDL", "GNU Free Documentation License 1.2", "Free Art License"], ["https://www.gnu.org/licenses/fdl.html"]),
    (["PD-US-expired", "PD-USGov-NASA", "PD NASA", "United States Government Work"],
     ["https://rightsstatements.org/vocab/NoC-US/1.0/"]),
    (["No known copyright restrictions", "Copyright not evaluated"], ["https://rightsstatements.org/vocab/CNE/1.0/"]),
    (["Used with permission", "Permission granted", "opt-in"], []),
]
FREE = [(["CC0", "cc0", "Creative Commons Zero, Public Domain Dedication", "CC0 1.0 Universal"],
         ["http://creativecommons.org/publicdomain/zero/1.0/deed.en"]),
        (["Public domain", "pd", "PD-old-100"], [])]


def disguise(rng: random.Random, value: str) -> str:
    """The same statement as a reader sees it, in a form a naive matcher misses."""
    ways: list[Callable[[str], str]] = [
        lambda v: v,
        lambda v: v.upper(),
        lambda v: v.lower(),
        lambda v: "\u200b".join(v),  # zero-width spaces between every letter
        lambda v: v + "\x00",
        lambda v: "\ufeff" + v + "\u200e",
        lambda v: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in v),  # fullwidth
        lambda v: f"  {v}  ",
        lambda v: f"<span class=\"licensetpl_short\">{v}</span>",
        lambda v: f"<b>{v}</b>",
    ]
    return rng.choice(ways)(value)


def pick(rng: random.Random, table: list) -> tuple[str, str | None]:
    texts, urls = rng.choice(table)
    return rng.choice(texts), (rng.choice(urls) if urls else None)


def refused_piece(rng: random.Random) -> str:
    """A refused license as text, as a URL, or hidden in the link of a free license's name."""
    text, url = pick(rng, REFUSED)
    free_text, _ = pick(rng, FREE)
    choices = [disguise(rng, text)] + ([disguise(rng, url), f'<a href="{url}">{free_text}</a>'] if url else [])
    return rng.choice(choices)


def free_piece(rng: random.Random) -> str:
    text, url = pick(rng, FREE[:1])  # one family, so free pieces never conflict with each other
    return disguise(rng, rng.choice([text, url] if url else [text]))


def judged(rows: list[dict]) -> list[dict]:
    return verdict.apply_policy(records.to_table(rows), Policy.default()).to_pylist()


def read_jsonl(tmp_path: Path, adapter: ModuleType, cases: list[dict]) -> list[dict]:
    """The verdicts on ``cases`` written as one JSON-lines file and read by ``adapter``."""
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    return judged(list(adapter.read(path, "fuzz", {})))


def assert_refused(rows: list[dict], cases: list) -> None:
    assert len(rows) == len(cases) >= 200
    admitted = [(row["source_id"], case) for row, case in zip(rows, cases) if row["status"] == records.PENDING]
    assert admitted == []
    assert {row["reason"] for row in rows} <= LICENSE_REASONS
    assert all(row["license_evidence"] for row in rows)


def assert_admitted(rows: list[dict]) -> None:
    assert len(rows) >= 50
    assert [(r["source_id"], r["reason"], r["detail"]) for r in rows if r["status"] != records.PENDING] == []


def test_the_disguises_are_still_readable():
    """The fuzz is only fair if every disguised refused value still says its license."""
    rng = random.Random(0)
    for _ in range(500):
        texts, urls = rng.choice(REFUSED)
        for value in texts + urls:
            text, hrefs = licenses.html_pieces(disguise(rng, value))
            assert licenses.read(text).recognised, value


# --- Commons -----------------------------------------------------------------------------------

COMMONS_FIELDS = ("License", "LicenseShortName", "LicenseUrl", "UsageTerms")


def commons_case(rng: random.Random, i: int, refused: bool) -> dict:
    ext = {name: {"value": free_piece(rng)} for name in rng.sample(COMMONS_FIELDS, rng.randint(1, 4))}
    categories = ["Paintings", "CC-Zero"] if rng.random() < 0.5 else ["Self-published work"]
    if refused:
        where = rng.choice([*COMMONS_FIELDS, "Categories", "Copyrighted"])
        if where == "Categories":
            categories.insert(rng.randrange(len(categories) + 1), disguise(rng, pick(rng, REFUSED)[0]))
        elif where == "Copyrighted":  # a public-domain claim on a file the source calls copyrighted
            ext = {"License": {"value": "pd"}, "UsageTerms": {"value": disguise(rng, "Public domain")}}
            categories = []
            ext["Copyrighted"] = {"value": "True"}
        else:
            ext[where] = {"value": refused_piece(rng)}
    ext["Categories"] = {"value": "|".join(categories)}
    return {"pageid": i, "title": f"File:{i}.jpg", "imageinfo": [{"url": f"https://u/{i}.jpg", "extmetadata": ext}]}


def test_commons(tmp_path):
    rng = random.Random(11)
    cases = [commons_case(rng, i, refused=True) for i in range(1, CASES_PER_ADAPTER + 1)]
    assert_refused(read_jsonl(tmp_path, commons, cases), cases)
    assert_admitted(read_jsonl(tmp_path, commons, [commons_case(rng, i, refused=False) for i in range(1, 61)]))


# --- Finna -------------------------------------------------------------------------------------


def finna_case(rng: random.Random, i: int, refused: bool) -> dict:
    rights = {"copyright": free_piece(rng), "link": "http://creativecommons.org/publicdomain/zero/1.0/deed.fi"}
    if refused:
        rights[rng.choice(["copyright", "link"])] = refused_piece(rng)
    return {"id": f"m.{i}", "images": [f"/Cover/Show?id=m.{i}"], "title": "t", "imageRights": rights}


def test_finna(tmp_path):
    rng = random.Random(12)
    cases = [finna_case(rng, i, refused=True) for i in range(CASES_PER_ADAPTER)]
    assert_refused(read_jsonl(tmp_path, finna, cases), cases)
    assert_admitted(read_jsonl(tmp_path, finna, [finna_case(rng, i, refused=False) for i in range(60)]))


# --- local folder sidecars ----------------------------------------------------------------------


def local_case(rng: random.Random, refused: bool) -> tuple[dict, dict, dict]:
    """(sidecar, metadata.jsonl entry, folder options)."""
    statements = {"sidecar.license": free_piece(rng), "jsonl.license": None, "default.license": None}
    for extra in rng.sample(["jsonl.license", "default.license"], rng.randint(0, 2)):
        statements[extra] = free_piece(rng)
    if refused:
        statements[rng.choice(["sidecar.license", "sidecar.license_url", "jsonl.license", "default.license"])] = (
            refused_piece(rng))
    sidecar = {k.split(".")[1]: v for k, v in statements.items() if k.startswith("sidecar") and v}
    listed = {k.split(".")[1]: v for k, v in statements.items() if k.startswith("jsonl") and v}
    options = {"license": statements["default.license"]} if statements["default.license"] else {}
    return sidecar, listed, options


def read_local(tmp_path: Path, name: str, cases: list[tuple[dict, dict, dict]]) -> list[dict]:
    """One folder per case, since the folder default is per folder."""
    rows = []
    for i, (sidecar, listed, options) in enumerate(cases):
        folder = tmp_path / name / f"f{i:03d}"
        folder.mkdir(parents=True)
        (folder / "a.jpg").write_bytes(b"x")
        (folder / "a.jpg.json").write_text(json.dumps(sidecar))
        if listed:
            (folder / "metadata.jsonl").write_text(json.dumps({"file": "a.jpg", **listed}) + "\n")
        rows.extend(local.read(folder, "mine", options))
    return judged(rows)


def test_local_sidecars(tmp_path):
    rng = random.Random(13)
    cases = [local_case(rng, refused=True) for _ in range(CASES_PER_ADAPTER)]
    assert_refused(read_local(tmp_path, "refused", cases), cases)
    assert_admitted(read_local(tmp_path, "free", [local_case(rng, refused=False) for _ in range(60)]))


# --- Flickr --------------------------------------------------------------------------------------

FLICKR_REFUSED_IDS = ["0", "1", "2", "3", "4", "5", "6", "7", "8"]


def flickr_case(rng: random.Random, i: int, refused: bool) -> dict:
    photo = {"id": str(i), "license": rng.choice(["9", "10", 9]), "url_o": f"https://f/{i}.jpg",
             "description": {"_content": rng.choice(["", "A heron at dawn", "Scanned from the <i>1890</i> album"])}}
    if refused:
        way = rng.choice(["id", "description", "license_text"])
        if way == "id":
            photo["license"] = rng.choice(FLICKR_REFUSED_IDS)
            photo["description"]["_content"] = disguise(rng, rng.choice(["Public domain", "CC0"]))
        elif way == "description":
            photo["description"]["_content"] = f"Taken in 1970. {refused_piece(rng)}"
        else:  # a license name where Flickr puts its id
            photo["license"] = disguise(rng, pick(rng, REFUSED + FREE)[0])
    return photo


def test_flickr(tmp_path):
    rng = random.Random(14)
    cases = [flickr_case(rng, i, refused=True) for i in range(CASES_PER_ADAPTER)]
    assert_refused(read_jsonl(tmp_path, flickr, cases), cases)
    assert_admitted(read_jsonl(tmp_path, flickr, [flickr_case(rng, i, refused=False) for i in range(60)]))


# --- Smithsonian ---------------------------------------------------------------------------------


def smithsonian_case(rng: random.Random, i: int, refused: bool) -> dict:
    usage = {"access": free_piece(rng)}
    rights = [{"label": "Access", "content": "Advance notice is recommended to consult a collection."}]
    if refused:
        where = rng.choice(["access", "text", "objectRights"])
        if where == "objectRights":
            rights.append({"label": "Restrictions & Rights", "content": disguise(rng, pick(rng, REFUSED)[0])})
        else:
            usage[where] = refused_piece(rng)
    media = {"type": "Images", "idsId": f"I{i}", "content": f"https://ids/I{i}", "usage": usage}
    return {"id": f"r{i}", "content": {"descriptiveNonRepeating": {"online_media": {"media": [media]}},
                                       "freetext": {"objectRights": rights}}}


def test_smithsonian(tmp_path):
    rng = random.Random(15)
    cases = [smithsonian_case(rng, i, refused=True) for i in range(CASES_PER_ADAPTER)]
    assert_refused(read_jsonl(tmp_path, smithsonian, cases), cases)
    assert_admitted(read_jsonl(tmp_path, smithsonian, [smithsonian_case(rng, i, refused=False) for i in range(60)]))


@pytest.mark.parametrize("make", [commons_case, finna_case, flickr_case, smithsonian_case])
def test_cases_differ(make):
    rng = random.Random(1)
    cases = [json.dumps(make(rng, i, True), sort_keys=True) for i in range(CASES_PER_ADAPTER)]
    assert len(set(cases)) == len(cases)
