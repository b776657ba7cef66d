"""Harvesting from a source's published data dump (``--from-dump FILE|URL``) instead of its API.

A dump given as a URL is first downloaded, politely, to ``raw/dump/<NAME>`` (a fixed name per
source, never one taken from the URL), where it is kept; a later pull finds it there and reads it
again. A download cut off, or killed, continues from the bytes it had (``NAME.part``). A local
file is read where it is. Dumps are hundreds of megabytes, so they are read as streams, a step of
``page_size`` records at a time: nothing holds the whole dump.

A step's state says where in the dump the next one starts, with the dump's size: a pull that
resumes on a dump of another size (a newer dump put in its place) is refused rather than read
from a position that no longer means the same record.
"""

from __future__ import annotations

import csv
import tarfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import ijson

from curate.harvest.client import PoliteClient

URL_SCHEMES = ("http://", "https://")


def normalized(dump: str) -> str:
    """A URL as given; a file as its absolute path (the harvest's identity), which must exist."""
    if dump.startswith(URL_SCHEMES):
        return dump
    path = Path(dump).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"--from-dump {dump}: no such file (give the dump's path or its http(s) URL)")
    return str(path)


def obtain(client: PoliteClient, dump: str | None, folder: Path, name: str) -> Path:
    """The dump's local file: the file given, or the URL's download as ``folder/name`` (made once)."""
    if dump is None:
        raise ValueError("a dump harvest needs --from-dump FILE|URL")
    if not dump.startswith(URL_SCHEMES):
        return Path(dump)
    path = folder / name
    if not path.is_file():  # a file there is the complete download (until then it is NAME.part)
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download(dump, path, resume=True)
    return path


def size_of(path: Path, state: dict[str, Any] | None) -> int:
    """The dump's size, checked against the one the harvest began on."""
    size = path.stat().st_size
    began = (state or {}).get("size")
    if began is not None and began != size:
        raise ValueError(f"{path}: the dump is {size} bytes now, {began} when this harvest began: a different "
                         f"dump; pull it into a new folder")
    return size


def csv_rows(path: Path, offset: int, columns: tuple[str, ...],
             what: str) -> Iterator[tuple[dict[str, str], int, int]]:
    """``(row by column name, its first byte, the byte after it)`` for each row of a CSV from ``offset``
    (0: the first row after the header), whose header must have ``columns``. The offset lets a resumed
    harvest seek to where it stopped instead of reading the dump again from its start."""
    with open(path, "rb") as f:
        header = _header(path, f)
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: not {what}: no column {', '.join(repr(c) for c in missing)} "
                             f"(its header: {', '.join(header[:8])}{', ...' if len(header) > 8 else ''})")
        if offset:
            f.seek(offset)
        position = f.tell()

        def lines() -> Iterator[str]:
            nonlocal position
            for line in f:
                position += len(line)
                # Only the columns a harvester reads are kept; a stray byte elsewhere must not stop it.
                yield line.decode("utf-8", errors="replace")

        start = position
        try:
            for row in csv.reader(lines()):
                if row:
                    yield dict(zip(header, row)), start, position
                start = position
        except csv.Error as e:
            raise ValueError(f"{path}: the CSV row at byte {start} does not parse: {e}") from None


def _header(path: Path, f: IO[bytes]) -> list[str]:
    line = f.readline()
    try:
        return next(csv.reader([line.decode("utf-8-sig")]))
    except (StopIteration, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: no CSV header line ({type(e).__name__}: {e})") from None


def json_array(path: Path, start: int) -> Iterator[tuple[int, Any]]:
    """``(index, element)`` of a file holding one JSON array, from element ``start`` on, parsed as a
    stream (ijson): an element at a time in memory, however long the array."""
    with open(path, "rb") as f:
        first = f.read(64).lstrip()[:1]
        if first != b"[":
            raise ValueError(f"{path}: not a JSON array (it begins {first!r}; the dump this reads is one JSON "
                             f"array of records)")
        f.seek(0)
        index = -1
        try:
            for index, item in enumerate(ijson.items(f, "item", use_float=True)):
                if index >= start:
                    yield index, item
        except ijson.JSONError as e:
            raise ValueError(f"{path}: not valid JSON after element {index}: {e}") from None


def tar_files(path: Path, wanted: Callable[[str], bool], largest: int) -> Iterator[tuple[str, bytes | None]]:
    """``(name, content)`` of each file in a tar archive (plain, .gz, .bz2 or .xz) whose name is
    ``wanted``, read as a stream, one file in memory at a time; content is None for a file over
    ``largest`` bytes (left unread: it is not a record)."""
    try:
        with tarfile.open(path, "r|*") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # TarFile keeps every member it has read: a list as long as the archive
                if not (member.isfile() and wanted(member.name)):
                    continue
                if member.size > largest:
                    yield member.name, None
                    continue
                handle = tar.extractfile(member)
                yield member.name, handle.read() if handle else None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path}: not a readable tar archive, or cut off ({type(e).__name__}: {e})") from None
