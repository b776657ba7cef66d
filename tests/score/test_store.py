"""Embedding files: float16 .npy row-aligned with parquet keys, deterministic part names, references."""

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import records
from curate.score import embed, store


def embedded(names: list[str], vectors: np.ndarray, without: tuple[str, ...] = ()) -> pa.Table:
    table = records.to_table([records.candidate("met", n) for n in names + list(without)])
    return embed.with_rows(table, embed.EMBEDDING, list(range(len(names))), vectors,
                           embed.embedding_type(vectors.shape[1]))


def unit(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_writer_stores_float16_rows_in_key_order_and_each_record_points_at_its_row(tmp_path):
    vectors = unit(3)
    batch = embedded(["c", "a", "b"], vectors, without=("no-image",))
    out = store.EmbeddingWriter(tmp_path)(batch)
    assert embed.EMBEDDING not in out.column_names
    files, rows = out[store.FILE].to_pylist(), out[store.ROW].to_pylist()
    assert files[3] is None and rows[3] is None
    (npy,) = (tmp_path / store.VECTORS_DIR).iterdir()
    (meta,) = (tmp_path / store.METADATA_DIR).iterdir()
    saved = np.load(npy)
    assert saved.dtype == np.float16 and saved.shape == (3, 8)
    keys = pq.read_table(meta)["key"].to_pylist()
    assert keys == sorted(batch["key"].to_pylist()[:3])
    for i in range(3):
        assert files[i] == f"{store.VECTORS_DIR}/{npy.name}"
        assert keys[rows[i]] == batch["key"][i].as_py()
        assert np.allclose(np.load(tmp_path / files[i])[rows[i]], vectors[i], atol=1e-3)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporary files left


def test_a_retried_batch_rewrites_its_part_and_load_returns_keys_in_the_order_asked(tmp_path):
    vectors = unit(3)
    writer = store.EmbeddingWriter(tmp_path)
    writer(embedded(["c", "a", "b"], vectors))
    writer(embedded(["b", "c", "a"], vectors[[2, 0, 1]]))  # same rows, another order: same part
    assert len(list((tmp_path / store.VECTORS_DIR).iterdir())) == 1
    keys = [records.make_key("met", n) for n in "cab"]
    loaded = store.load(tmp_path, [keys[2], keys[0]])
    assert loaded.keys == [keys[2], keys[0]] and loaded.vectors.dtype == np.float16
    assert np.allclose(loaded.vectors, vectors[[2, 0]], atol=1e-3)
    assert sorted(store.load(tmp_path).keys) == sorted(keys)
    with pytest.raises(KeyError, match=f"{tmp_path}: no embedding for 1 of 1 keys"):
        store.load(tmp_path, ["met-unknown"])


def test_a_key_in_two_parts_and_an_empty_store_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no embeddings"):
        store.load(tmp_path)
    store.write_part(tmp_path, ["a", "b"], unit(2))
    store.write_part(tmp_path, ["b", "c"], unit(2, seed=1))
    with pytest.raises(ValueError, match="more than one part"):
        store.load(tmp_path)


def test_reader_reads_any_rows_of_several_parts_in_the_order_asked_and_keys_locate_them(tmp_path):
    vectors = unit(700, dim=4, seed=2)
    keys = [f"k{i:04d}" for i in range(700)]
    for part in (range(0, 300), range(300, 310), range(310, 700)):
        store.write_part(tmp_path, [keys[i] for i in part], vectors[list(part)])
    reader = store.Reader(store.parts(tmp_path))
    assert len(reader) == 700 and reader.dim == 4
    loaded = store.load(tmp_path)
    # Rows from every part, repeated, out of order, far apart and adjacent: the reader's spans and gaps.
    rows = np.array([699, 0, 305, 1, 2, 650, 299, 300, 0, 400, 10])
    assert np.array_equal(reader.gather(rows), loaded.vectors[rows])
    con = duckdb.connect()
    store.register_keys(con, store.parts(tmp_path), "stored", first_row=1000)
    located = dict(con.execute("SELECT key, row FROM stored").fetchall())
    assert len(located) == 700
    assert all(loaded.keys[located[k] - 1000] == k for k in keys)
    with pytest.raises(IndexError, match="outside 0..699"):
        reader.gather(np.array([700]))


def test_a_part_that_does_not_match_its_keys_is_named(tmp_path):
    name = store.write_part(tmp_path, ["a", "b", "c"], unit(3))
    np.save(tmp_path / name, unit(2).astype(np.float16))
    with pytest.raises(ValueError, match=r"\(2, 8\) is not float16 rows for the 3 keys"):
        store.parts(tmp_path)
    store.write_part(tmp_path / "other", ["a"], unit(1, dim=8))
    store.write_part(tmp_path / "other", ["b"], unit(1, dim=4))
    with pytest.raises(ValueError, match="4-d embeddings in a store of 8-d ones|8-d embeddings in a store of 4-d"):
        store.parts(tmp_path / "other")
