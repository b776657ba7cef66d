import pytest

from curate import records


def test_key_is_stable_and_webdataset_safe():
    key = records.make_key("commons", "museovirasto.CC0641BB")
    assert key == records.make_key("commons", "museovirasto.CC0641BB")
    assert key != records.make_key("finna", "museovirasto.CC0641BB")
    assert "." not in key and key.startswith("commons-")


def test_rejected_without_id_is_keyed_by_origin_and_keeps_raw():
    row = records.rejected("met", None, "missing_id", "objectID missing", origin="objects.jsonl:7", raw="{}")
    other = records.rejected("met", None, "missing_id", "objectID missing", origin="objects.jsonl:8", raw="{}")
    assert row["key"] != other["key"] and row["source_id"] is None
    table = records.to_table([row])
    assert table["status"].to_pylist() == ["rejected"] and table["raw"].to_pylist() == ["{}"]


def test_unknown_reason_or_field_is_refused():
    row = records.candidate("met", "1", url="http://x/1.jpg")
    with pytest.raises(records.RecordError):
        records.finish(row, records.REJECTED, "looks_bad")
    with pytest.raises(records.RecordError):
        records.candidate("met", "1", colour="red")
    assert records.valid_reason(records.FAILED, "download_http_404")
