"""The demo corpus: a generation killed part-way and run again writes what an uninterrupted one does."""

import hashlib

import pytest

from curate import demo
from curate.config import Demo

URL = "http://127.0.0.1:9/"
SETTINGS = Demo(images=9, seed=3)


def contents(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_killed_and_resumed_generation_is_byte_identical_to_an_uninterrupted_one(tmp_path, monkeypatch):
    reference = tmp_path / "a"
    demo.generate(reference, URL, SETTINGS)
    resumed = tmp_path / "b"
    writes = []

    def killed_after_five(data, path):
        if len(writes) == 5:
            raise KeyboardInterrupt("killed")
        writes.append(path)
        write(data, path)

    write = demo.write_bytes_atomic
    with monkeypatch.context() as patch:
        patch.setattr(demo, "write_bytes_atomic", killed_after_five)
        with pytest.raises(KeyboardInterrupt):
            demo.generate(resumed, URL, SETTINGS)
    (resumed / "files" / ".met-3.jpg.x1y2.tmp").write_bytes(b"half a jpeg")  # what a SIGKILL leaves
    writes[-1].write_bytes(writes[-1].read_bytes()[:100])  # as the old, non-atomic generator left them
    assert contents(resumed) != contents(reference)

    demo.generate(resumed, URL, SETTINGS)
    assert contents(resumed) == contents(reference)


def test_every_image_is_its_own_picture():
    seeds = {demo.image_seed(0, f"met-{i}.jpg") for i in range(1, 100)}
    assert len(seeds) == 99
    assert demo.image_seed(0, "met-1.jpg") != demo.image_seed(1, "met-1.jpg")


def test_distinct_names_give_distinct_files_and_only_the_planned_copies_repeat(tmp_path):
    demo.generate(tmp_path, URL, SETTINGS)
    digests = {}
    for path in [*(tmp_path / "files").iterdir(), *(tmp_path / "local").glob("*.jpg")]:
        digests.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path.name)
    repeated = sorted(sorted(names) for names in digests.values() if len(names) > 1)
    assert repeated == [["commons-dup.jpg", "met-2.jpg"], ["contribution-1.jpg", "contribution-copy.jpg"]]


def test_the_random_heads_are_the_same_bytes_each_time(tmp_path):
    demo.write_models(tmp_path / "a", 8)
    demo.write_models(tmp_path / "b", 8)
    assert contents(tmp_path / "a") == contents(tmp_path / "b") and len(contents(tmp_path / "a")) == 3
