"""Revocation: a contributor takes their consent back, from the store and from finished runs.

``revoke`` records the revocation in the store first (so the decision is durable before
any run is touched), then, for each run folder, ``revoke_in_run``:

1. finds the records of the revoked consents (by ``consent_id``) in ``OUT/records`` and the
   shards whose parquet lists them;
2. rewrites only those shards with ``shards.write_shard``, from the remaining records and
   the image bytes read back from the old tar: write_shard writes deterministic tars, so
   every remaining sample comes out byte-identical (tar first, then parquet, each by
   rename). A shard left with no sample is removed;
3. writes ``index.json`` (last of the shard files, as a run does), then deletes the
   removed shards' files, which the new index no longer names;
4. drops the records' rows from the stage outputs under ``OUT/work`` (fetched image bytes
   among them) and marks the records ``rejected:revoked`` in ``OUT/records`` with the
   contributor's name, titles, captions, URLs and embedding reference scrubbed;
5. takes their rows out of ``OUT/embeddings``: each part holding one is written again
   without it under the name of its remaining keys (vectors, then metadata, as the scoring
   stage writes a part), the other records of that part are pointed at their new file and
   row in ``OUT/records`` and ``OUT/work``, and only then is the old part deleted (metadata
   first: a part without it is never read). Parts are read one at a time (a part is one
   scoring batch), and every parquet file is rewritten on its own;
6. appends an entry to ``OUT/revocations.jsonl`` (what a model card reports), rebuilds the
   catalog and ``stats.json`` (keeping what only the run knew: ``models``), and adds an
   entry to the store's audit log.

Every step can be repeated: a run interrupted anywhere is finished by running the same
revocation again, and a run already clean is left as it is. The intake server runs
``apply_recorded`` (every recorded revocation) on each revocation on its page and
``finish_interrupted`` when it starts, so a pass cut short by a crash or an error is finished
by the next one, and a failure is logged and written to the store's audit log
(``revoke_run_failed``), never answered as a server error after the store revocation stood. Between writing a part's
replacement and deleting the old part, both hold the remaining keys, and readers of the
store refuse it; running the revocation again finishes it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import records, shards
from curate.fetch import KEY_COLUMN
from curate.io import write_parquet_atomic, write_text_atomic
from curate.optin.errors import OptinError
from curate.optin.layout import REVOKED
from curate.optin.store import Revocation, Store, new_id, now
from curate.runfolder import DONE, RunFolder
from curate.score import store as embeddings

log = logging.getLogger("cleanroom.optin.revoke")

_LOCK = ".revoke.lock"
_JOURNAL = ".revoke-journal.json"
# Record fields that describe the contributor or their image; emptied on revocation. The row
# keeps its key, source, consent id, license and sha256: enough to show what was removed.
SCRUBBED = ("url", "page_url", "creator", "title", "meta", "attribution", "caption", "caption_origin", "shard",
            embeddings.FILE, embeddings.ROW)


@dataclass
class RunRevocation:
    """What one application of revocations did to a run (an ``OUT/revocations.jsonl`` entry)."""

    run: str
    revocation_ids: list[str]
    applied_at: str
    pass_id: str | None = None  # None when the run was already clean and nothing was done
    records_revoked: int = 0
    samples_removed: int = 0
    shards_rewritten: list[str] = field(default_factory=list)
    shards_removed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return vars(self)


@dataclass
class _Journal:
    """A pass in progress, saved before its first change: a pass cut off anywhere is resumed
    from it, and its log entry counts what the whole pass did, not only the resumed part."""

    pass_id: str
    revocation_ids: set[str]
    applied_at: str
    marked: set[str] = field(default_factory=set)  # record keys to mark rejected:revoked
    removed: set[str] = field(default_factory=set)  # sample keys to take out of shards
    rewritten: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)  # shards left empty, to delete

    @classmethod
    def load(cls, path: Path) -> _Journal | None:
        if not path.exists():
            return None
        return cls(**{k: set(v) if isinstance(v, list) else v for k, v in json.loads(path.read_text()).items()})

    def save(self, path: Path) -> None:
        write_text_atomic(json.dumps({k: sorted(v) if isinstance(v, set) else v for k, v in vars(self).items()}),
                          path)

    def result(self, out: Path) -> RunRevocation:
        return RunRevocation(run=str(out), revocation_ids=sorted(self.revocation_ids), applied_at=self.applied_at,
                             pass_id=self.pass_id, records_revoked=len(self.marked), samples_removed=len(self.removed),
                             shards_rewritten=sorted(self.rewritten), shards_removed=sorted(self.dropped))


def revoke(store: Store, contributor_id: str, evidence: dict[str, Any],
           runs: Iterable[Path] = ()) -> tuple[Revocation, list[RunRevocation]]:
    """Revoke a contributor's consent in the store, then in each finished run."""
    revocation = store.revoke(contributor_id, evidence)
    return revocation, apply(store, runs, [revocation])


def apply(store: Store, runs: Iterable[Path], revocations: list[Revocation] | None = None) -> list[RunRevocation]:
    """Apply revocations (default: every one the store holds) to finished runs."""
    chosen = store.revocations() if revocations is None else revocations
    by_consent = {c.consent_id: r for r in chosen for c in store.consents(r.contributor_id)}
    results = []
    for out in runs:
        result = revoke_in_run(RunFolder.at(out), by_consent)
        if result.records_revoked or result.samples_removed:
            store.audit("revoke_run", **result.as_dict())
        results.append(result)
    return results


def apply_recorded(store: Store, runs: Iterable[Path]) -> bool:
    """Apply every revocation the store holds to each run, one run failing leaving the others to go on
    (the failure logged, also in the audit log); True when every run is clean now."""
    clean = True
    for out in runs:
        try:
            apply(store, [out])
        except Exception as e:  # noqa: BLE001 (whatever broke, the next pass resumes from the journal)
            log.exception("applying revocations to %s failed; the next pass finishes it", out)
            store.audit("revoke_run_failed", run=str(out), error=f"{type(e).__name__}: {e}")
            clean = False
    return clean


def finish_interrupted(store: Store, runs: Iterable[Path]) -> bool:
    """Finish the revocation passes that were cut short in ``runs`` (those that left a journal)."""
    return apply_recorded(store, [out for out in runs if (Path(out) / _JOURNAL).exists()])


@contextmanager
def _locked(folder: RunFolder) -> Iterator[None]:
    with open(folder.root / _LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two revocations of one run must not interleave shard rewrites
        yield


def revoke_in_run(folder: RunFolder, by_consent: dict[str, Revocation]) -> RunRevocation:
    """Remove the samples of the revoked consents (consent id -> its revocation) from one finished run.

    A run already clean is not written at all; the result then counts nothing.
    """
    out = folder.root
    if not folder.done:
        raise OptinError(f"{out}: not a finished run (no {DONE}); revoke after the run finished, or re-run it: "
                         "a new run reads the revocation from the store")
    ids = {r.revocation_id for r in by_consent.values()}
    with _locked(folder):
        table = pq.read_table(folder.manifest)
        consent = table["consent_id"].cast(pa.string())
        revoked = table.filter(pc.is_in(consent, value_set=pa.array(sorted(by_consent), pa.string())))
        keys = set(revoked["key"].to_pylist())
        marked = {r["key"] for r in revoked.select(["key", "status", "reason"]).to_pylist()
                  if (r["status"], r["reason"]) != (records.REJECTED, REVOKED)}
        removed = _in_shards(folder.shards, keys)
        remaining = _remaining(table, keys, removed)
        journal = _Journal.load(out / _JOURNAL)
        if journal is None:
            if not marked and not removed and not _embedding_parts(folder.embeddings, keys):
                return RunRevocation(run=str(out), revocation_ids=sorted(ids), applied_at=now())
            journal = _Journal(pass_id=new_id("pass"), revocation_ids=ids, applied_at=now())
        journal.revocation_ids |= ids
        journal.marked |= marked
        journal.removed |= {k for found in removed.values() for k in found}
        journal.rewritten |= {name for name, rows in remaining.items() if rows}
        journal.dropped |= {name for name, rows in remaining.items() if not rows}
        journal.save(out / _JOURNAL)
        _rewrite_shards(folder.shards, remaining, journal)
        _drop_from_work(folder.work, keys)
        _mark_records(folder, table, by_consent)
        _drop_embeddings(folder, keys)
        result = journal.result(out)
        if result.pass_id not in {e.get("pass_id") for e in folder.revocation_log()}:  # once, also when resumed
            with open(folder.revocations, "a", encoding="utf-8") as f:
                f.write(json.dumps(result.as_dict(), sort_keys=True) + "\n")
        folder.finalize()  # after the log: the catalog shows this pass too
        (out / _JOURNAL).unlink()
    return result


def _shard_names(shards_dir: Path) -> list[str]:
    index = json.loads((shards_dir / shards.INDEX).read_text())
    return [entry["tar"].removesuffix(".tar") for entry in index["shards"]]


def _in_shards(shards_dir: Path, keys: set[str]) -> dict[str, set[str]]:
    """Shard name -> the given keys it holds, by the shard parquets (written after their tars)."""
    found = {}
    for name in _shard_names(shards_dir):
        listed = set(pq.read_table(shards_dir / f"{name}.parquet", columns=["key"])["key"].to_pylist())
        if listed & keys:
            found[name] = listed & keys
    return found


def _remaining(table: pa.Table, keys: set[str], removed: dict[str, set[str]]) -> dict[str, list[dict[str, Any]]]:
    """Shard name -> the records that stay in it, for each shard losing samples."""
    kept = table.filter(pc.equal(table["status"], records.KEPT)).to_pylist()
    return {name: [r for r in kept if r["shard"] == name and r["key"] not in keys] for name in sorted(removed)}


def _rewrite_shards(shards_dir: Path, remaining: dict[str, list[dict[str, Any]]], journal: _Journal) -> None:
    """Rewrite the shards that keep samples; then the index without emptied shards; then delete those."""
    for name, rows in remaining.items():
        if rows:
            shards.write_shard(shards_dir, name, rows, _images(shards_dir / f"{name}.tar", rows, name))
    if journal.rewritten or journal.dropped:  # also when resuming: the index may predate the rewrites
        shards.write_index(shards_dir, [n for n in _shard_names(shards_dir) if n not in journal.dropped])
    for name in sorted(journal.dropped):  # the index no longer names them
        for suffix in (".tar", ".parquet"):
            (shards_dir / f"{name}{suffix}").unlink(missing_ok=True)


def _images(tar_path: Path, rows: list[dict[str, Any]], name: str) -> dict[str, bytes]:
    """The stored image of each remaining sample, read back from the shard being rewritten."""
    wanted = {f"{r['key']}.jpg": r["key"] for r in rows}
    images = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            if member.name in wanted:
                images[wanted[member.name]] = tar.extractfile(member).read()
    missing = sorted(set(wanted.values()) - images.keys())
    if missing:
        raise OptinError(f"{tar_path}: no image for records {missing[:5]} that OUT/records keeps in {name}; "
                         "the run's records and shards disagree")
    return images


def _drop_from_work(work: Path, keys: set[str]) -> None:
    """Stage outputs keep the records (and fetched image bytes) too; a finished run never reads
    them again, but they must not keep what was revoked."""
    value_set = pa.array(sorted(keys), pa.string())
    for path in sorted(work.rglob("*.parquet")):
        names = pq.read_schema(path).names
        column = next((c for c in ("key", KEY_COLUMN) if c in names), None)
        if column is None:
            continue
        if not pc.any(_hits(pq.read_table(path, columns=[column])[column], value_set)).as_py():
            continue  # read the whole file (image bytes, for fetch output) only when it must change
        table = pq.read_table(path)
        write_parquet_atomic(table.filter(pc.invert(_hits(table[column], value_set))), path)


def _hits(column: pa.ChunkedArray, value_set: pa.Array) -> pa.ChunkedArray:
    return pc.fill_null(pc.is_in(column.cast(pa.string()), value_set=value_set), False)


def _mark_records(folder: RunFolder, table: pa.Table, by_consent: dict[str, Revocation]) -> None:
    rows = table.to_pylist()
    changed = False
    for row in rows:
        revocation = by_consent.get(row["consent_id"])
        if revocation is None or (row["status"], row["reason"]) == (records.REJECTED, REVOKED):
            continue
        was = row["status"] + (f":{row['reason']}" if row["reason"] else "")
        where = f" in {row['shard']}" if row["shard"] else ""
        row.update({name: None for name in SCRUBBED})
        records.finish(row, records.REJECTED, REVOKED, f"consent revoked {revocation.revoked_at} "
                                                       f"({revocation.revocation_id}); was {was}{where}")
        changed = True
    if changed:
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=table.schema), folder.manifest)


def _embedding_parts(root: Path, keys: set[str]) -> list[str]:
    """The parts of the embedding store (``root``) that hold a row of any of ``keys``."""
    value_set = pa.array(sorted(keys), pa.string())
    return [meta.stem.removeprefix("metadata_") for meta in sorted((root / embeddings.METADATA_DIR).glob("*.parquet"))
            if pc.any(_hits(pq.read_table(meta, columns=["key"])["key"], value_set)).as_py()]


def _drop_embeddings(folder: RunFolder, keys: set[str]) -> None:
    """Remove the rows of ``keys`` from the run's embedding store; the other rows of their parts move."""
    root = folder.embeddings
    parts = _embedding_parts(root, keys)
    moved: dict[str, tuple[str | None, int | None]] = {key: (None, None) for key in keys}
    for part in parts:
        moved |= _rewrite_part(root, part, keys)
    _repoint(folder, moved)
    for part in parts:  # nothing refers to them any more
        vectors, meta = embeddings.part_paths(root, part)
        meta.unlink(missing_ok=True)
        vectors.unlink(missing_ok=True)


def _rewrite_part(root: Path, part: str, keys: set[str]) -> dict[str, tuple[str, int]]:
    """Write the part's rows other than ``keys`` as a part of their own; key -> (its file, its row)."""
    vectors_path, meta = embeddings.part_paths(root, part)
    part_keys = pq.read_table(meta, columns=["key"])["key"].to_pylist()
    vectors = np.load(vectors_path)
    stay = [i for i, key in enumerate(part_keys) if key not in keys]
    if not stay:
        return {}
    stay_keys = [part_keys[i] for i in stay]
    # float16 -> float32 -> float16 is exact: the remaining vectors are stored unchanged.
    name = embeddings.write_part(root, stay_keys, vectors[stay])
    return {key: (name, row) for row, key in enumerate(sorted(stay_keys))}  # write_part orders rows by key


def _repoint(folder: RunFolder, moved: dict[str, tuple[str | None, int | None]]) -> None:
    """Set ``embedding_file`` / ``embedding_row`` of the ``moved`` records wherever a run keeps them."""
    value_set = pa.array(sorted(moved), pa.string())
    for path in sorted([*folder.records.glob("*.parquet"), *folder.work.rglob("*.parquet")]):
        names = pq.read_schema(path).names
        if embeddings.FILE not in names or "key" not in names:
            continue
        if not pc.any(_hits(pq.read_table(path, columns=["key"])["key"], value_set)).as_py():
            continue
        table = pq.read_table(path)
        before = list(zip(table[embeddings.FILE].to_pylist(), table[embeddings.ROW].to_pylist()))
        after = [moved.get(key, ref) for key, ref in zip(table["key"].to_pylist(), before)]
        if after == before:
            continue  # e.g. OUT/records, whose revoked rows were scrubbed already
        files, rows = map(list, zip(*after))
        table = records.put_column(table, embeddings.FILE, pa.array(files, table.schema.field(embeddings.FILE).type))
        table = records.put_column(table, embeddings.ROW, pa.array(rows, table.schema.field(embeddings.ROW).type))
        write_parquet_atomic(table, path)
