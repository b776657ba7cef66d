"""Near dedup: the shared keep order, pHash within a Hamming distance, CLIP components, earlier runs."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate import dedup, records
from curate.runfolder import RunFolder
from curate.score import images, store

RANKS = {"CC0-1.0": 0, "public-domain": 1}
PRIORITY = {"met": 0, "commons": 1, "local": 2}
key = records.make_key


def rec(source, source_id, license="CC0-1.0", width=400, height=400, **fields):
    return records.candidate(source, source_id, license=license, original_width=width, original_height=height,
                             **fields)


def decisions_of(table):
    return {d["key"]: (d["duplicate_of"], d["reason"]) for d in table.to_pylist()}


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def near(base, cosine, seed):
    """A unit vector at exactly ``cosine`` to the unit vector ``base``."""
    other = np.random.default_rng(seed).normal(size=base.shape).astype(np.float32)
    other = unit(other - other.dot(base) * base)
    return unit(cosine * base + np.sqrt(1 - cosine ** 2) * other)


def test_keep_order_is_earlier_run_then_license_then_size_then_source_then_key():
    rows = [rec("commons", "pd-big", "public-domain", 2000, 2000), rec("met", "cc0-small", width=100, height=100),
            rec("commons", "cc0-small", width=100, height=100), rec("local", "cc0-big", width=800, height=800),
            rec("met", "no-size", width=None, height=None), rec("met", "unranked", "other-license")]
    table = records.to_table(rows).select(list(dedup.ORDER_COLUMNS))
    order = np.argsort(dedup.keep_positions(table, RANKS, PRIORITY))
    assert [rows[i]["source_id"] for i in order] == ["cc0-big", "cc0-small", "cc0-small", "no-size", "pd-big",
                                                     "unranked"]
    assert [rows[i]["source"] for i in order[1:3]] == ["met", "commons"]
    earlier = table.append_column(dedup.EARLIER, pa.array([False] * 5 + [True]))
    assert np.argmin(dedup.keep_positions(earlier, RANKS, PRIORITY)) == 5


def jpeg_of(picture: Image.Image, quality=90) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def painting(seed, size=(320, 240)):
    small = (np.random.default_rng(seed).random((6, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def test_phash_finds_a_resized_reencoded_copy_and_keeps_the_museums_cc0_one():
    rows = [rec("commons", "wave", "public-domain", 1600, 1200), rec("met", "wave", width=800, height=600),
            rec("met", "other")]
    data = [jpeg_of(painting(1).resize((160, 120)), quality=60), jpeg_of(painting(1)), jpeg_of(painting(2))]
    table = records.to_table(rows).append_column(images.IMAGE, pa.array(data, pa.binary()))
    hashed = dedup.add_phash(table)
    assert all(len(h) == 16 for h in hashed[dedup.PHASH].to_pylist())
    found = dedup.phash_decisions(hashed, RANKS, PRIORITY, dedup.PHashDedup(max_distance=6))
    assert decisions_of(found) == {key("commons", "wave"): (key("met", "wave"), "near_duplicate_phash")}
    assert f"bits from {key('met', 'wave')}" in found["detail"][0].as_py()


def test_phash_distance_threshold_is_inclusive():
    codes = np.array([0, 0b0111 << 56, 0b1111], dtype=np.uint64)  # 3 and 4 bits from the first, 7 apart
    assert dedup.phash_pairs(codes, 3).tolist() == [[0, 1]]
    assert dedup.phash_pairs(codes, 4).tolist() == [[0, 1], [0, 2]]
    assert dedup.phash_pairs(codes, 7).tolist() == [[0, 1], [0, 2], [1, 2]]


def all_pairs_within(codes: np.ndarray, max_distance: int) -> np.ndarray:
    """The method pHash dedup used before its index: every code against every code (faiss, exact)."""
    import faiss

    index = faiss.IndexBinaryFlat(64)
    as_bytes = codes.astype(">u8").view(np.uint8).reshape(len(codes), 8)
    index.add(as_bytes)
    lims, _, found = index.range_search(as_bytes, max_distance + 1)  # faiss keeps distances < radius
    queries = np.repeat(np.arange(len(codes)), np.diff(lims.astype(np.int64)))
    upper = found > queries
    return np.stack([queries[upper], found[upper]], axis=1)


@pytest.mark.parametrize("max_distance", [0, 1, 4, 6, 10, 16])
def test_phash_index_finds_exactly_the_pairs_of_comparing_every_pair(max_distance):
    rng = np.random.default_rng(max_distance)
    codes = rng.integers(0, 2**64, size=4000, dtype=np.uint64)
    # Plant copies at every distance from 0 to max_distance + 2, flipped bits spread over the code,
    # and a cluster of codes one bit apart in the same few buckets.
    for distance in range(max_distance + 3):
        for _ in range(5):
            i, j = rng.choice(len(codes), size=2, replace=False)
            flipped = sum(1 << int(b) for b in rng.choice(64, size=distance, replace=False))
            codes[j] = codes[i] ^ np.uint64(flipped)
    codes[:40] = codes[0] ^ (np.uint64(1) << np.arange(40, dtype=np.uint64))
    expected = all_pairs_within(codes, max_distance)
    found = dedup.phash_pairs(codes, max_distance)
    distances = np.bitwise_count(codes[expected[:, 0]] ^ codes[expected[:, 1]])
    assert (distances == max_distance).any()  # the boundary is among the pairs compared
    assert found.tolist() == expected.tolist()


def semantic_case():
    """a: a painting from Commons (PD) and the Met (CC0); b-c-d: a chain; e: alone."""
    rng = np.random.default_rng(0)
    a, b, e = unit(rng.normal(size=(3, 64)))
    c = near(b, 0.96, 1)
    d = near(c, 0.96, 2)
    rows = [rec("commons", "a", "public-domain"), rec("met", "a"), rec("local", "b", width=200, height=200),
            rec("commons", "c", width=900, height=900), rec("met", "d", width=300, height=300), rec("met", "e")]
    vectors = np.stack([a, near(a, 0.97, 3), b, c, d, e])
    return rows, vectors


def scored_run(folder, rows, vectors, phashes=None):
    """A run as near dedup reads it: the scored records and their embedding store; returns the glob."""
    table = records.to_table(rows)
    if phashes is not None:
        table = records.put_column(table, dedup.PHASH, pa.array(phashes))
    (folder / "scored").mkdir(parents=True)
    pq.write_table(table, folder / "scored" / "part.parquet")
    store.write_part(RunFolder(folder).embeddings, [r["key"] for r in rows], vectors)
    return str(folder / "scored" / "*.parquet")


def clip_decisions(folder, rows, vectors, config):
    glob = scored_run(folder, rows, vectors)
    return dedup.near_decisions(glob, RunFolder(folder).embeddings, RANKS, PRIORITY,
                                dedup.NearDedupConfig(clip=config), dedup.empty_decisions())


def test_clip_dedup_groups_connected_components_and_keeps_by_the_keep_policy(tmp_path):
    rows, vectors = semantic_case()
    assert float(vectors[2] @ vectors[4]) < 0.95  # b and d are linked only through c
    found = clip_decisions(tmp_path, rows, vectors, dedup.ClipDedup(threshold=0.95))
    assert decisions_of(found) == {key("commons", "a"): (key("met", "a"), "near_duplicate_clip"),
                                   key("local", "b"): (key("commons", "c"), "near_duplicate_clip"),
                                   key("met", "d"): (key("commons", "c"), "near_duplicate_clip")}
    details = dict(zip(found["key"].to_pylist(), found["detail"].to_pylist()))
    assert details[key("commons", "a")].startswith("CLIP cosine 0.970 to ")


def test_a_copy_linked_only_through_another_reports_its_own_cosine_to_the_survivor(tmp_path):
    rng = np.random.default_rng(4)
    best = unit(rng.normal(size=16))
    middle = near(best, 0.97, 1)
    far = near(middle, 0.97, 2)
    cosine = float(far @ best)
    assert cosine < 0.95
    rows = [rec("met", "best", width=900, height=900), rec("met", "middle"), rec("met", "far")]
    found = clip_decisions(tmp_path, rows, np.stack([best, middle, far]), dedup.ClipDedup(threshold=0.95))
    details = dict(zip(found["key"].to_pylist(), found["detail"].to_pylist()))
    assert details[key("met", "far")].startswith(f"CLIP cosine {cosine:.3f} to {key('met', 'best')}")
    assert details[key("met", "middle")].startswith(f"CLIP cosine {float(middle @ best):.3f} to ")


def clustered_store(root, n=12_000, dim=32, parts=3):
    """Vectors around 50 centres, 100 planted copies at cosine 0.97, stored in several parts."""
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(50, dim)))
    vectors = unit(centres[rng.integers(0, 50, n)] + rng.normal(size=(n, dim)) * 0.12)
    planted = rng.choice(n, size=(100, 2), replace=False)
    for i, j in planted:
        vectors[j] = near(vectors[i], 0.97, int(i))
    keys = [f"k{i:06d}" for i in range(n)]
    for part in np.array_split(rng.permutation(n), parts):
        store.write_part(root, [keys[i] for i in part], vectors[part])
    reader = store.Reader(store.parts(root))
    loaded = store.load(root)
    row_of = {k: i for i, k in enumerate(loaded.keys)}
    stored_planted = {tuple(sorted((row_of[keys[i]], row_of[keys[j]]))) for i, j in planted}
    return reader, loaded.vectors.astype(np.float32), stored_planted


def test_clustered_search_from_the_store_finds_the_same_pairs_as_comparing_every_pair(tmp_path):
    reader, vectors, planted = clustered_store(tmp_path)
    every = np.arange(len(reader))
    flat, _ = dedup.similar_pairs(reader, every, dedup.ClipDedup(threshold=0.95, exact_below=10**9))
    assert planted <= set(map(tuple, flat.tolist()))
    products = np.einsum("ij,ij->i", vectors[flat[:, 0]], vectors[flat[:, 1]])
    # A few thousand vectors in memory at once: the lists are read from the store in many groups.
    for max_vectors in (10**6, 3_000):
        clustered, cosines = dedup.similar_pairs(reader, every, dedup.ClipDedup(threshold=0.95, exact_below=0,
                                                                                max_vectors=max_vectors))
        assert clustered.tolist() == flat.tolist()
        assert np.allclose(cosines, products, atol=1e-5)


def test_groups_compared_as_ray_tasks_find_the_same_pairs(tmp_path):
    import ray

    reader, _, planted = clustered_store(tmp_path)
    every = np.arange(len(reader))
    config = dedup.ClipDedup(threshold=0.95, exact_below=0, max_vectors=3_000)  # many groups, several in flight
    here, here_cosines = dedup.similar_pairs(reader, every, config)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spread, spread_cosines = dedup.similar_pairs(reader, every, config, dedup.ray_map)
    finally:
        ray.shutdown()
    assert planted <= set(map(tuple, spread.tolist()))
    assert spread.tolist() == here.tolist()
    assert np.array_equal(spread_cosines, here_cosines)


def test_clip_dedup_reads_only_the_candidates_among_the_stored_rows(tmp_path):
    reader, vectors, planted = clustered_store(tmp_path, n=2_000)
    some = np.arange(0, len(reader), 2)
    pairs, _ = dedup.similar_pairs(reader, some, dedup.ClipDedup(threshold=0.95))
    expected = {(int(np.flatnonzero(some == i)[0]), int(np.flatnonzero(some == j)[0]))
                for i, j in planted if i % 2 == 0 and j % 2 == 0}
    assert expected and set(map(tuple, pairs.tolist())) == expected


def write_run(out, rows, vectors):
    """A finished earlier run as dedup reads it: records/*.parquet and its embedding store."""
    (out / "records").mkdir(parents=True)
    pq.write_table(records.to_table(rows), out / "records" / "records.parquet")
    kept = [i for i, r in enumerate(rows) if r["status"] == records.KEPT]
    store.write_part(RunFolder(out).embeddings, [rows[i]["key"] for i in kept], vectors[kept])


def test_a_new_run_dedups_against_an_earlier_runs_kept_records_without_redeciding_them(tmp_path):
    rng = np.random.default_rng(1)
    old, fresh, pair = unit(rng.normal(size=(3, 16)))
    earlier = [records.finish(rec("commons", "old", "public-domain"), records.KEPT, ""),
               records.finish(rec("commons", "dropped", "public-domain"), records.REJECTED, "watermark")]
    write_run(tmp_path / "run1", earlier, np.stack([old, near(old, 0.99, 5)]))
    # This run: a CC0 copy of the earlier kept record (a better license, yet the earlier one
    # is in shards already), the earlier record itself offered again, and a new pair.
    rows = [rec("met", "copy-of-old"), rec("commons", "old", "public-domain"), rec("met", "fresh"),
            rec("commons", "fresh", "public-domain"), rec("met", "pair")]
    vectors = np.stack([near(old, 0.98, 6), old, fresh, near(fresh, 0.99, 7), pair])
    run2 = tmp_path / "run2"
    (run2 / "scored").mkdir(parents=True)
    pq.write_table(records.to_table(rows), run2 / "scored" / "part.parquet")
    store.write_part(RunFolder(run2).embeddings, [r["key"] for r in rows], vectors)
    config = dedup.NearDedupConfig(clip=dedup.ClipDedup(against=[dedup.PriorRun(out=str(tmp_path / "run1"))]))
    found = dedup.near_decisions(str(run2 / "scored" / "*.parquet"), RunFolder(run2).embeddings, RANKS, PRIORITY,
                                 config, dedup.empty_decisions())
    assert decisions_of(found) == {key("met", "copy-of-old"): (key("commons", "old"), "near_duplicate_clip"),
                                   key("commons", "old"): (key("commons", "old"), "near_duplicate_clip"),
                                   key("commons", "fresh"): (key("met", "fresh"), "near_duplicate_clip")}
    details = dict(zip(found["key"].to_pylist(), found["detail"].to_pylist()))
    assert f"kept by the earlier run {tmp_path / 'run1'}" in details[key("met", "copy-of-old")]


def test_near_dedup_runs_phash_then_clip_over_what_exact_dedup_left(tmp_path):
    rng = np.random.default_rng(2)
    base, other = unit(rng.normal(size=(2, 16)))
    rows = [rec("met", "exact-loser"), rec("met", "p1"), rec("commons", "p2"), rec("local", "c1"),
            rec("commons", "c2")]
    hashes = ["0" * 16, "0" * 16, "0" * 15 + "1", "f" * 16, "0f" * 8]  # p2 1 bit from p1; c1, c2 far
    vectors = np.stack([base, base, near(base, 0.99, 1), other, near(other, 0.99, 2)])
    glob = scored_run(tmp_path, rows, vectors, hashes)
    exact = pa.table({"key": [key("met", "exact-loser")], "duplicate_of": [key("met", "p1")],
                      "reason": ["exact_sha256"], "detail": ["same original bytes"]}, schema=dedup.DECISIONS)
    config = dedup.NearDedupConfig(phash=dedup.PHashDedup(max_distance=2), clip=dedup.ClipDedup())
    found = dedup.near_decisions(glob, RunFolder(tmp_path).embeddings, RANKS, PRIORITY, config, exact)
    assert decisions_of(found) == {key("commons", "p2"): (key("met", "p1"), "near_duplicate_phash"),
                                   key("local", "c1"): (key("commons", "c2"), "near_duplicate_clip")}


def test_apply_duplicates_carries_each_reason_and_detail():
    rows = [rec("met", "a"), rec("commons", "b"), rec("local", "c"), rec("met", "kept")]
    decisions = pa.table({"key": [key("met", "a"), key("commons", "b"), key("local", "c")],
                          "duplicate_of": [key("met", "kept")] * 3,
                          "reason": ["exact_sha256", "near_duplicate_phash", "near_duplicate_clip"],
                          "detail": ["same bytes", "pHash 2 bits", "CLIP cosine 0.990"]}, schema=dedup.DECISIONS)
    out = dedup.ApplyDuplicates()(dedup.attach_decisions(records.to_table(rows), decisions)).to_pylist()
    assert [(r["status"], r["reason"], r["duplicate_of"], r["detail"]) for r in out] == [
        ("duplicate", "exact_sha256", key("met", "kept"), "same bytes"),
        ("duplicate", "near_duplicate_phash", key("met", "kept"), "pHash 2 bits"),
        ("duplicate", "near_duplicate_clip", key("met", "kept"), "CLIP cosine 0.990"),
        ("pending", "", None, None)]


def test_earlier_run_with_another_embedder_is_refused(tmp_path):
    write_run(tmp_path / "run1", [records.finish(rec("met", "x"), records.KEPT, "")], unit(np.ones((1, 8))))
    pq.write_table(records.to_table([rec("met", "y")]), tmp_path / "scored.parquet")
    store.write_part(RunFolder(tmp_path).embeddings, [key("met", "y")], unit(np.ones((1, 16))))
    config = dedup.NearDedupConfig(clip=dedup.ClipDedup(against=[dedup.PriorRun(out=str(tmp_path / "run1"))]))
    with pytest.raises(ValueError, match="8-d, this run's are 16-d"):
        dedup.near_decisions(str(tmp_path / "scored.parquet"), RunFolder(tmp_path).embeddings, RANKS, PRIORITY, config,
                             dedup.empty_decisions())
