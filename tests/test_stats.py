import pyarrow.parquet as pq
import pytest

from curate import records, stages, stats

ORDER = stages.run_order(stages.BUILT_IN)


def every_fate() -> list[dict]:
    """A record for each reason every declared stage may give, and one of each any-stage failure per stage."""
    rows = [records.finish(records.candidate("met", f"{stage.name}-{reason}"), status, reason)
            for stage in stages.declared().values() for status, reasons in stage.reasons.items()
            for reason in reasons]
    rows += [records.finish(records.candidate("met", f"{stage}-{reason}"), records.FAILED, reason, stage=stage)
             for reason in stages.ANY_STAGE[records.FAILED] for stage in ("fetch", "score", "caption")]
    return rows


def test_every_reason_belongs_to_a_stage_and_counts_add_up(tmp_path):
    rows = every_fate()
    (tmp_path / "records").mkdir()
    pq.write_table(records.to_table(rows), tmp_path / "records" / "records.parquet")
    result = stats.compute(tmp_path / "records", ORDER)
    by_stage = result["by_stage"]
    assert list(by_stage) == ORDER
    assert result["records"] == len(rows) and result["kept"] == 1
    assert sum(s["removed"] for name, s in by_stage.items() if name != "shards") == len(rows) - 1
    assert by_stage["shards"] == {"in": 1, "written": 1}
    assert by_stage["dedup"]["removed"] == len(stages.DECLARED["dedup"].reasons[records.DUPLICATE])
    assert by_stage["score"]["fates"] == {"failed:decode_error": 1, "failed:stage_error": 1,
                                          "rejected:low_aesthetic": 1, "rejected:nsfw": 1, "rejected:watermark": 1}
    for name in ORDER[:-1]:
        assert by_stage[name]["out"] == by_stage[name]["in"] - by_stage[name]["removed"]


def test_a_failure_any_stage_may_give_must_name_its_stage():
    with pytest.raises(records.RecordError, match="name the stage"):
        records.finish(records.candidate("met", "1"), records.FAILED, "stage_error", "boom")


def test_a_manifest_from_before_the_stage_column_counts_by_declared_reason(tmp_path):
    rows = [records.finish(records.candidate("met", "1"), records.REJECTED, "min_side", "64 < 128"),
            records.finish(records.candidate("met", "2"), records.FAILED, "download_http_404", "HTTP Error 404")]
    (tmp_path / "records").mkdir()
    pq.write_table(records.to_table(rows).drop_columns(["stage"]), tmp_path / "records" / "old.parquet")
    by_stage = stats.compute(tmp_path / "records", ORDER)["by_stage"]
    assert (by_stage["resolution"]["removed"], by_stage["fetch"]["removed"]) == (1, 1)
