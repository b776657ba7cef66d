import pyarrow.parquet as pq

from curate import records, stats


def test_every_reason_belongs_to_a_stage_and_counts_add_up(tmp_path):
    rows = [records.finish(records.candidate("met", str(i)), status, reason)
            for i, (status, reason) in enumerate(
                [(s, r) for s, reasons in records.REASONS.items() for r in reasons])]
    (tmp_path / "records").mkdir()
    pq.write_table(records.to_table(rows), tmp_path / "records" / "records.parquet")
    result = stats.compute(tmp_path / "records")
    stages = result["by_stage"]
    assert result["records"] == len(rows) and result["kept"] == 1
    assert sum(s["removed"] for name, s in stages.items() if name != "shards") == len(rows) - 1
    assert stages["shards"] == {"in": 1, "written": 1}
    assert stages["dedup"]["removed"] == len(records.REASONS[records.DUPLICATE])
