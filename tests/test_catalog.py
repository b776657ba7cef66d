"""The run catalog's tables, on a run folder made in the test."""

import pyarrow.parquet as pq

from curate import catalog, records, shards


def test_a_run_that_kept_nothing_has_an_empty_samples_table_with_the_shard_columns(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "shards").mkdir()
    rejected = records.rejected("met", "1", "license_unknown", "no license field")
    pq.write_table(records.to_table([rejected]), tmp_path / "records" / "records.parquet")
    catalog.build(tmp_path)
    sizes = catalog.query(tmp_path, "SELECT count(*) n, max(original_width) o, max(stored_width) s FROM samples")
    assert sizes.to_pylist() == [{"n": 0, "o": None, "s": None}]
    columns = catalog.query(tmp_path, "SELECT * FROM samples").column_names
    assert columns == shards.SAMPLE_SCHEMA.names
