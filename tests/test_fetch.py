"""The fetch stage against a loopback server: every failure mode gets its own reason."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate import fetch, pixels, records
from curate.localserve import serve

SETTINGS = fetch.FetchSettings(processes_count=1, thread_count=4, timeout=1, image_size=128)


def jpeg(width: int, height: int, seed: int) -> bytes:
    image = Image.effect_noise((width, height), 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# key -> (path on the server, expected reason); "" is a successful fetch.
CASES = {
    "small": ("small.jpg", ""),  # below image_size: kept as is
    "large": ("large.jpg", ""),  # above image_size: resized, original size reported
    "redirected": ("redirect/small.jpg", ""),
    "html": ("page.jpg", "decode_error"),
    "truncated": ("truncated.jpg", "decode_error"),
    "missing": ("status/404", "download_http_404"),
    "server_error": ("status/500", "download_http_500"),
    "slow": ("slow/3/small.jpg", "download_timeout"),
    "opted_out": ("noai/small.jpg", "site_disallowed"),
}
SIZES = {"small": (64, 48), "large": (300, 200), "redirected": (64, 48)}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    files = {"small.jpg": jpeg(64, 48, 1), "large.jpg": jpeg(300, 200, 2)}
    files["truncated.jpg"] = files["large.jpg"][: len(files["large.jpg"]) // 2]
    files["page.jpg"] = b"<!doctype html><html><body>Not an image</body></html>"
    for name, data in files.items():
        (root / name).write_bytes(data)
    hits: list[str] = []
    with serve(root, requests=hits) as base_url:
        yield base_url, files, hits


@pytest.fixture(scope="module")
def fetched(site, tmp_path_factory):
    base_url, _, _ = site
    out = tmp_path_factory.mktemp("fetch")
    candidates = pa.table({"key": list(CASES), "url": [base_url + path for path, _ in CASES.values()]})
    fetch.download(candidates, out, SETTINGS)
    return out, candidates


def test_each_failure_mode_has_its_reason(fetched):
    out, _ = fetched
    table = fetch.results(out)
    assert table.schema == fetch.RESULT_SCHEMA
    assert sorted(table["key"].to_pylist()) == sorted(CASES)  # every key exactly once
    got = {r["key"]: r for r in table.to_pylist()}
    for key, (_, reason) in CASES.items():
        assert got[key]["reason"] == reason, (key, got[key])
        expected = {"": records.PENDING, "site_disallowed": records.REJECTED}.get(reason, records.FAILED)
        assert got[key]["status"] == expected
        assert records.valid_reason(got[key]["status"], got[key]["reason"])
    assert got["missing"]["detail"] == "HTTP Error 404: Not Found"
    assert got["html"]["detail"] == ("decode_error: cannot identify image file (53 bytes, starting 3c21646f63747970) "
                                     f"as {', '.join(pixels.FORMATS)}")
    assert got["truncated"]["detail"].startswith("decode_error: OSError: ")  # Pillow's own message


def test_success_carries_original_hash_and_size(fetched, site):
    out, _ = fetched
    _, files, _ = site
    got = {r["key"]: r for r in fetch.results(out).to_pylist()}
    for key, name in [("small", "small.jpg"), ("large", "large.jpg"), ("redirected", "small.jpg")]:
        assert got[key]["sha256"] == hashlib.sha256(files[name]).hexdigest()
        assert (got[key]["original_width"], got[key]["original_height"]) == SIZES[key]
        assert got[key]["detail"] is None
    assert got["html"]["sha256"] is None and got["html"]["original_width"] is None


def test_read_images_returns_the_stored_jpegs(fetched):
    out, _ = fetched
    images = fetch.read_images(out, ["small", "large", "redirected"])
    sizes = {key: Image.open(io.BytesIO(data)).size for key, data in images.items()}
    for data in images.values():
        Image.open(io.BytesIO(data)).load()  # decodes in full
    # image_size=128 with keep_ratio: the smaller side goes to 128 only when it is bigger.
    assert sizes == {"small": (64, 48), "large": (192, 128), "redirected": (64, 48)}
    with pytest.raises(KeyError, match="html"):
        fetch.read_images(out, ["small", "html"])


def test_rerun_asks_again_only_for_what_may_answer_now(fetched, site):
    out, candidates = fetched
    _, _, hits = site
    before_hits = len(hits)
    before = {p.name: p.stat().st_mtime_ns for p in (out / fetch.IMAGES).iterdir()}
    fetch.download(candidates.take([3, 1, 0, 2, 8, 7, 6, 5, 4]), out, SETTINGS)  # same list, other order
    assert sorted(hits[before_hits:]) == ["/slow/3/small.jpg", "/status/500"]  # a timeout and a 5xx; not the 404
    assert {p.name: p.stat().st_mtime_ns for p in (out / fetch.IMAGES).iterdir()} == before
    got = {r["key"]: r for r in fetch.results(out).to_pylist()}
    assert {key: r["reason"] for key, r in got.items()} == {key: reason for key, (_, reason) in CASES.items()}
    assert {key for key, r in got.items() if r["attempts"] == 2} == {"slow", "server_error"}


def test_other_candidates_in_same_folder_refused(fetched):
    out, candidates = fetched
    with pytest.raises(ValueError, match="different candidate list"):
        fetch.download(candidates.slice(0, 3), out, SETTINGS)


def test_unfinished_shard_reads_as_not_fetched_and_resumes(fetched, tmp_path):
    out, candidates = fetched
    copy = tmp_path / "fetch"
    (copy / fetch.IMAGES).mkdir(parents=True)
    (copy / fetch.CANDIDATES).write_bytes((out / fetch.CANDIDATES).read_bytes())
    (copy / fetch.IMAGES / "00000.parquet").write_bytes((out / fetch.IMAGES / "00000.parquet").read_bytes())
    table = fetch.results(copy)  # no 00000_stats.json: as if interrupted before the shard finished
    assert table.num_rows == candidates.num_rows
    assert set(table["reason"].to_pylist()) == {"not_fetched"}
    fetch.download(candidates, copy, SETTINGS)
    assert {r["key"]: r["reason"] for r in fetch.results(copy).to_pylist()} == {k: r for k, (_, r) in CASES.items()}


def test_bad_candidates_are_named(tmp_path):
    with pytest.raises(ValueError, match="duplicate keys.*'a'"):
        fetch.download(pa.table({"key": ["a", "a"], "url": ["u", "v"]}), tmp_path, SETTINGS)
    with pytest.raises(ValueError, match="without a url.*'b'"):
        fetch.download(pa.table({"key": ["a", "b"], "url": ["u", None]}), tmp_path, SETTINGS)
    with pytest.raises(ValueError, match="missing columns.*url"):
        fetch.download(pa.table({"key": ["a"]}), tmp_path, SETTINGS)


def test_no_candidates(tmp_path):
    fetch.download(pa.table({"key": pa.array([], pa.string()), "url": pa.array([], pa.string())}),
                   tmp_path, SETTINGS)
    assert fetch.results(tmp_path).num_rows == 0
    assert fetch.read_images(tmp_path, []) == {}


@pytest.mark.parametrize("message, reason", [
    # as observed from img2dataset 1.47 against tests' loopback server
    ("HTTP Error 404: Not Found", "download_http_404"),
    ("HTTP Error 500: Internal Server Error", "download_http_500"),
    ("HTTP Error 403: Forbidden", "download_http_403"),
    ("timed out", "download_timeout"),
    ("<urlopen error [Errno 111] Connection refused>", "download_error"),
    ("<urlopen error [Errno -2] Name or service not known>", "download_error"),
])
def test_fate(message, reason):
    assert fetch.fate(message) == (records.FAILED, reason)
    assert records.valid_reason(records.FAILED, reason)


def test_a_site_opting_out_is_a_rejection_not_a_failure():
    status, reason = fetch.fate("Use of image disallowed by X-Robots-Tag directive")
    assert (status, reason) == (records.REJECTED, "site_disallowed") and records.valid_reason(status, reason)


def test_pixel_refusals_keep_their_reason():
    assert fetch.fate("decode_error: cannot identify image file (0 bytes, starting with nothing)") == (
        records.FAILED, "decode_error")
    status, reason = fetch.fate("too_many_pixels: the image claims 9000x9000 = 81000000 pixels; the limit is ...")
    assert (status, reason) == (records.REJECTED, "too_many_pixels") and records.valid_reason(status, reason)


def test_fate_of_success():
    assert fetch.fate(None) == (records.PENDING, "")


def test_refuses_an_img2dataset_that_would_not_use_our_pixels(monkeypatch, tmp_path):
    import img2dataset

    # As if a new img2dataset built its resizer elsewhere: cv2's pixels would reach the shards.
    monkeypatch.setattr(img2dataset, "download", lambda **_: None)
    with pytest.raises(RuntimeError, match="curate.pixels was not used"):
        fetch.download(pa.table({"key": ["a"], "url": ["http://127.0.0.1:9/a.jpg"]}), tmp_path, SETTINGS)


def test_settings_forbid_unknown_fields():
    with pytest.raises(ValueError, match="threads"):
        fetch.FetchSettings(threads=4)
    assert fetch.FetchSettings().resize_only_if_bigger


def test_apply_fetch_sets_fates_and_leaves_decided_records():
    ok = records.candidate("met", "1", url="u1")
    gone = records.candidate("met", "2", url="u2")
    unfetched = records.candidate("met", "3", url="u3")
    refused = records.rejected("met", "4", "license_not_allowed", "CC BY-NC")
    fetched = pa.Table.from_pylist([
        dict(key=ok["key"], status=records.PENDING, reason="", sha256="ab" * 32, original_width=640,
             original_height=480),
        dict(key=gone["key"], status=records.FAILED, reason="download_http_404", detail="HTTP Error 404: Not Found"),
        dict(key=refused["key"], status=records.FAILED, reason="download_http_500"),  # never applied
    ], schema=fetch.RESULT_SCHEMA)
    out = fetch.ApplyFetch()(fetch.attach_results(records.to_table([ok, gone, unfetched, refused]), fetched))
    rows = {r["source_id"]: r for r in out.to_pylist()}
    assert (rows["1"]["status"], rows["1"]["sha256"], rows["1"]["original_width"]) == (
        records.PENDING, "ab" * 32, 640)
    assert (rows["2"]["status"], rows["2"]["reason"]) == (records.FAILED, "download_http_404")
    assert (rows["3"]["status"], rows["3"]["reason"]) == (records.FAILED, "not_fetched")
    assert (rows["4"]["status"], rows["4"]["reason"]) == (records.REJECTED, "license_not_allowed")
    # The record's columns, and the rights metadata fetch found in the original (curate.rights).
    assert out.schema.equals(records.SCHEMA.append(pa.field(fetch.RIGHTS, pa.string())))
    assert rows["1"][fetch.RIGHTS] is None



@pytest.fixture(scope="module")
def ray_driver():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("distributor", ["ray", "multiprocessing"])
def test_download_inside_a_ray_driver(ray_driver, site, tmp_path, distributor):
    base_url, _, _ = site
    keys = ["small", "missing", "truncated"]
    candidates = pa.table({"key": keys, "url": [base_url + CASES[k][0] for k in keys]})
    fetch.download(candidates, tmp_path, SETTINGS.model_copy(update={"distributor": distributor}))
    got = {r["key"]: r["reason"] for r in fetch.results(tmp_path).to_pylist()}
    assert got == {k: CASES[k][1] for k in keys}


def test_an_image_is_read_from_its_location_and_a_changed_folder_is_caught(tmp_path):
    folder = tmp_path / "met" / fetch.IMAGES
    folder.mkdir(parents=True)
    keys = [f"met-{i}" for i in range(5)]
    table = pa.table({fetch.KEY_COLUMN: keys, fetch.ENCODE_COLUMN: [k.encode() for k in keys]})
    pq.write_table(table, folder / "00000.parquet", row_group_size=2)  # img2dataset writes groups of 100
    where = "met/images/00000.parquet"
    rows = [{"key": "met-4", "image_file": where, "image_row": 4},
            {"key": "met-1", "image_file": where, "image_row": 1}]
    assert fetch.read_located(tmp_path, rows) == {"met-4": b"met-4", "met-1": b"met-1"}
    with pytest.raises(KeyError, match="row 3 holds met-3, not met-1"):
        fetch.read_located(tmp_path, [{"key": "met-1", "image_file": where, "image_row": 3}])
    with pytest.raises(KeyError, match="no stored image"):
        fetch.read_located(tmp_path, [{"key": "met-2", "image_file": None, "image_row": None}])


def test_auto_distributor_fetches_on_the_drivers_machine_unless_ray_has_several_nodes(ray_driver):
    assert fetch.FetchSettings().resolved().distributor == "multiprocessing"  # one local node
    assert fetch.FetchSettings(distributor="ray").resolved().distributor == "ray"
    assert fetch.FetchSettings(distributor="multiprocessing").resolved().distributor == "multiprocessing"
