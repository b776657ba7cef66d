"""Atomic writes (build a file or a folder under a temporary name beside it, then rename) and
reading back the append-only JSON-lines logs.

Every output is written through here so that a reader (or a resumed run) never sees half a
file, and so that outputs get the permissions a plain ``open()`` or ``mkdir()`` gives under
the process umask (0644 files, 0755 folders under umask 022): ``tempfile`` makes 0600 files
and 0700 folders, and safetensors renames its own 0600 temp file over its target, which
would leave weights and checkpoints unreadable to the other users of a shared filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

PARTIAL = ".partial"

log = logging.getLogger("cleanroom.io")


def _set_permissions(path: Path, wanted: int) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o777 != wanted:
        os.chmod(path, (mode & ~0o777) | wanted)  # keeps a setgid bit a shared folder relies on


def _sync(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: the rename that published a file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_file(path: Path) -> tuple[Path, int]:
    """An empty temp file beside ``path`` and the mode the kernel gave it (0666 minus the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # curate.demo clears .NAME.*.tmp
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return tmp, os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; fsynced and renamed onto ``path`` only if the block
    succeeds, else removed. Writers may replace the temp file; its mode is set back afterwards."""
    path = Path(path)
    tmp, mode = _new_file(path)
    try:
        yield tmp
        _set_permissions(tmp, mode)
        _sync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync(path.parent)


def partial_folder(path: Path) -> Path:
    """Where the folder ``path`` is built: a ``NAME.partial`` sibling, the same name in every process."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL)


def start_folder(path: Path) -> Path:
    """An empty ``partial_folder(path)`` (one left by an interrupted write is removed first)."""
    partial = partial_folder(path)
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir()
    return partial


def publish_folder(path: Path) -> Path:
    """Make the finished ``partial_folder(path)`` the folder ``path``, replacing an older one.

    Every file and folder in it gets the mode a plain open() and mkdir() would give (the
    partial folder's own mode says what the umask allows), and is fsynced before the rename.
    """
    path, partial = Path(path), partial_folder(path)
    folder_mode = os.stat(partial).st_mode & 0o777
    for root, folders, files in os.walk(partial):
        for name in files:
            _set_permissions(Path(root) / name, folder_mode & 0o666)
            _sync(Path(root) / name)
        for name in folders:
            _set_permissions(Path(root) / name, folder_mode)
        _sync(Path(root))
    shutil.rmtree(path, ignore_errors=True)  # a folder cannot be renamed over a non-empty one
    os.replace(partial, path)
    _sync(path.parent)
    return path


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A fresh folder to fill; it becomes ``path`` (replacing an older one) only if the block
    succeeds, else it is removed. For several processes writing one folder, use
    ``start_folder``, ``partial_folder`` and ``publish_folder`` directly."""
    partial = start_folder(path)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish_folder(path)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_text_atomic(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(data: bytes, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The objects of an append-only JSON-lines log, oldest first; [] when there is none.

    Lines end at "\\n" only (``str.splitlines`` also splits at U+0085 and U+2028, which JSON
    strings may hold). A line that is not a JSON object (a torn write, a hand edit) is reported
    with its number and skipped: one damaged entry must not make the log unreadable.
    """
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            entry, problem = None, f"not JSON ({e.msg} at column {e.colno})"
        else:
            problem = None if isinstance(entry, dict) else f"a JSON {type(entry).__name__}, not an object"
        if problem:
            log.warning("%s:%d: %s; line skipped", path, number, problem)
            continue
        entries.append(entry)
    return entries
