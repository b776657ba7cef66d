"""Ingest hands records on in bounded blocks: a large metadata file is never one block of the whole file."""

from pathlib import Path

from curate.config import load_pipeline, resolve_sources
from curate.ingest import Ingest, work_items


def folder_source(tmp_path: Path, images: int):
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(images):
        (folder / f"{i:03d}.jpg").write_bytes(b"not decoded at ingest")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"name: t\nsources:\n  - manifest: local\n    metadata: [{folder}]\n"
                        "    options: {license: CC0-1.0, base_url: 'http://127.0.0.1:9/'}\n")
    return resolve_sources(load_pipeline(pipeline), pipeline, {"out": str(tmp_path)})


def test_records_of_one_file_come_in_blocks_of_at_most_rows_per_block(tmp_path):
    import pyarrow as pa

    sources = folder_source(tmp_path, 25)
    blocks = list(Ingest(sources, rows_per_block=10)(pa.Table.from_pylist(work_items(sources))))
    assert [block.num_rows for block in blocks] == [10, 10, 5]
    ids = [r["source_id"] for block in blocks for r in block.to_pylist()]
    assert sorted(ids) == [f"{i:03d}.jpg" for i in range(25)] and len(set(ids)) == 25
