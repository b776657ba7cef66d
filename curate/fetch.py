"""The fetch stage: candidate urls -> stored images, sha256 and original size, via img2dataset.

Layout of a fetch folder (one per source in a run)::

    candidates.parquet   the url list img2dataset reads: ``record_key``, ``url``, sorted by key
    settings.json        the FetchSettings this folder was fetched with
    images/              img2dataset's output: ``NNNNN.parquet`` per shard (metadata + the stored
                         image in ``jpg``), ``NNNNN_stats.json`` written after the parquet is closed

Why img2dataset's *parquet* output: one file per shard holds both the per-sample metadata
(status, error_message, sha256, original size) and the encoded image in a ``jpg`` column,
so ``results`` reads the metadata by column projection without touching image bytes, and
``read_images`` reads images back by our key with a filter. The webdataset output would
need a scan of the tars to find a key; ``files`` writes one file per image.

Pixels: img2dataset's own resizer decodes with ``cv2.imdecode``, which ignores EXIF
orientation and ICC profiles, clips 16-bit samples to 255 and reports a zero-byte file as
an opencv assertion. So img2dataset downloads, checks X-Robots-Tag and hashes the original
bytes, and ``curate.pixels.Normaliser`` makes the stored image in its place, in the same
pass (see ``_img2dataset`` for how it is handed over): one decode per image, in
img2dataset's worker processes, no original kept on disk. Its refusals come back as
img2dataset error messages ``"<reason>: <decoder message>"``.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import threading
from pathlib import Path
from typing import Iterable, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from curate import pixels, records
from curate.io import write_parquet_atomic, write_text_atomic

# albumentations (imported by img2dataset) asks PyPI for a newer version at import time:
# without network that is a stall and a warning in every worker process (they inherit this).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CANDIDATES = "candidates.parquet"
SETTINGS = "settings.json"
IMAGES = "images"
# img2dataset writes a ``key`` column of its own (shard + row), so ours travels under this name.
KEY_COLUMN = "record_key"
ENCODE_COLUMN = "jpg"

RESULT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("original_width", pa.int32()),  # as displayed (EXIF orientation applied), before resize
        pa.field("original_height", pa.int32()),
    ]
)
_FETCHED_COLUMNS = ("status", "reason", "detail", "sha256", "original_width", "original_height")
NOT_FETCHED_DETAIL = "img2dataset wrote no row for this key (its shard did not complete)"


class FetchSettings(BaseModel):
    """Politeness and encoding settings for one source; see img2dataset.download for each.

    The resize fields keep img2dataset's names and meaning, but ``curate.pixels`` applies them.
    """

    model_config = ConfigDict(extra="forbid")

    processes_count: int = Field(1, ge=1)
    thread_count: int = Field(8, ge=1)
    timeout: float = Field(10, gt=0)  # seconds, per request
    retries: int = Field(0, ge=0)
    user_agent_token: str = "cleanroom"
    # img2dataset's own default: X-Robots-Tag directives that forbid using the image.
    disallowed_header_directives: list[str] = Field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"])
    image_size: int = Field(1024, ge=1)
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "keep_ratio"
    # img2dataset's keep_ratio otherwise *enlarges* images smaller than image_size.
    resize_only_if_bigger: bool = True
    encode_format: Literal["jpg"] = "jpg"
    encode_quality: int = Field(95, ge=0, le=100)
    # Images with more pixels are rejected (too_many_pixels) from their header, before decoding;
    # Pillow itself refuses more than its limit as a decompression bomb.
    max_pixels: int = Field(pixels.PILLOW_MAX_PIXELS, ge=1, le=pixels.PILLOW_MAX_PIXELS)
    number_sample_per_shard: int = Field(1000, ge=1)
    # "ray" runs each img2dataset shard as a task on the Ray this process is connected to
    # (processes_count is then unused: Ray's CPUs bound the parallelism).
    distributor: Literal["multiprocessing", "ray"] = "multiprocessing"

    def target(self) -> pixels.Target:
        return pixels.Target(size=self.image_size, mode=self.resize_mode, only_if_bigger=self.resize_only_if_bigger,
                             quality=self.encode_quality, max_pixels=self.max_pixels)

    def img2dataset_args(self) -> dict:
        """The keyword arguments of ``img2dataset.download`` these settings stand for (all but ``target``)."""
        return dict(
            processes_count=self.processes_count,
            thread_count=self.thread_count,
            timeout=self.timeout,
            retries=self.retries,
            user_agent_token=self.user_agent_token,
            disallowed_header_directives=list(self.disallowed_header_directives),
            encode_format=self.encode_format,
            number_sample_per_shard=self.number_sample_per_shard,
            distributor=self.distributor,
            input_format="parquet",
            url_col="url",
            save_additional_columns=[KEY_COLUMN],
            output_format="parquet",
            # sha256 of the downloaded bytes: img2dataset hashes its input stream, which the
            # Normaliser only reads, so this is the original file, not the stored one.
            compute_hash="sha256",
            # Shards with a stats file are skipped: an interrupted fetch resumes, a finished
            # one is a no-op. ("overwrite" is broken in 1.47: it deletes its own _tmp folder.)
            incremental_mode="incremental",
            extract_exif=False,  # not in the record; costs a parse per image
            enable_wandb=False,
        )


# ---------------------------------------------------------------- download


def download(candidates: pa.Table, out_dir: Path, settings: FetchSettings) -> Path:
    """Fetch every candidate's url into ``out_dir`` (resumable; a no-op once finished).

    ``candidates`` needs columns ``key`` and ``url`` (others are ignored). Returns ``out_dir``.
    Runs img2dataset in this process's main thread: it installs a SIGINT handler, which
    Python allows only there (we restore the previous one afterwards).
    """
    out_dir = Path(out_dir)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"fetch.download({out_dir}) must run in the main thread: "
                           "img2dataset installs a SIGINT handler")
    url_list = _url_list(candidates)
    _write_candidates(url_list, out_dir / CANDIDATES)
    write_text_atomic(settings.model_dump_json(indent=2), out_dir / SETTINGS)
    if url_list.num_rows == 0:
        return out_dir
    sigint = signal.getsignal(signal.SIGINT)
    try:
        _img2dataset(out_dir / CANDIDATES, out_dir / IMAGES, settings)
    finally:
        if sigint is not None:  # None: a handler not set from Python, nothing we can restore
            # img2dataset's handler would exit the whole process with status 0 on Ctrl-C.
            signal.signal(signal.SIGINT, sigint)
    return out_dir


def _url_list(candidates: pa.Table) -> pa.Table:
    missing = {"key", "url"} - set(candidates.column_names)
    if missing:
        raise ValueError(f"fetch candidates: missing columns {sorted(missing)} (have {candidates.column_names})")
    table = pa.table({KEY_COLUMN: candidates["key"].cast(pa.string()), "url": candidates["url"].cast(pa.string())})
    if table[KEY_COLUMN].null_count:
        raise ValueError("fetch candidates: a candidate has no key")
    no_url = table.filter(pc.is_null(table["url"]))
    if no_url.num_rows:
        raise ValueError(f"fetch candidates: records without a url: {no_url[KEY_COLUMN].to_pylist()[:5]}")
    if pc.count_distinct(table[KEY_COLUMN]).as_py() != table.num_rows:
        counts = pc.value_counts(table[KEY_COLUMN])
        twice = [c["values"].as_py() for c in counts if c["counts"].as_py() > 1]
        raise ValueError(f"fetch candidates: duplicate keys {twice[:5]}")
    # img2dataset shards by row position, so the order must not depend on the caller; sorted
    # keys also give each shard file a narrow key range that read_images' filter can skip by.
    return table.sort_by(KEY_COLUMN)


def _write_candidates(url_list: pa.Table, path: Path) -> None:
    """Write the url list, or check that a resumed fetch is given the same one."""
    if path.exists():
        if not pq.read_table(path).equals(url_list):
            raise ValueError(f"{path}: this fetch folder holds a different candidate list; "
                             "resuming it would mix shards of both lists (use a fresh folder)")
        return
    write_parquet_atomic(url_list, path)


def _img2dataset(url_list: Path, output: Path, settings: FetchSettings) -> None:
    """``img2dataset.download`` with ``pixels.Normaliser`` as its resizer.

    img2dataset takes no resizer argument: ``download`` builds one from the name
    ``img2dataset.main.Resizer`` and gives it to its Downloader, which is pickled, resizer
    and all, to every worker (spawned process or Ray task). So that name is swapped for the
    call (the caller holds the main thread), and a version of img2dataset that stops using
    it is refused rather than silently storing cv2-decoded pixels.
    """
    import img2dataset  # with torch, ray and wandb: loaded to fetch, not when a config names FetchSettings

    main = importlib.import_module("img2dataset.main")  # the package rebinds ``main`` to a function
    normaliser, built = pixels.Normaliser(settings.target()), []

    def resizer(**_img2dataset_resize_args):
        built.append(normaliser)
        return normaliser

    original, main.Resizer = main.Resizer, resizer
    try:
        img2dataset.download(url_list=str(url_list), output_folder=str(output), **settings.img2dataset_args())
    finally:
        main.Resizer = original
    if not built:
        raise RuntimeError(f"img2dataset {getattr(img2dataset, '__version__', '?')} no longer builds its resizer "
                           "from img2dataset.main.Resizer, so curate.pixels was not used: install "
                           "img2dataset==1.47.0 (pip install -c constraints.txt ...)")


# ---------------------------------------------------------------- results

_HTTP_ERROR = re.compile(r"^HTTP Error (\d{3})\b")
_TIMEOUT = re.compile(r"timed out", re.IGNORECASE)
_PIXEL_STATUS = {pixels.DECODE_ERROR: records.FAILED, pixels.TOO_MANY_PIXELS: records.REJECTED}

_ROBOTS_DISALLOWED = "Use of image disallowed by X-Robots-Tag directive"


def fate(error_message: str | None) -> tuple[str, str]:
    """img2dataset's error message -> our (status, reason); ``None`` means it succeeded.

    Messages seen (img2dataset 1.47, urllib): ``HTTP Error 404: Not Found``, ``timed out``
    (no answer within the timeout), ``<urlopen error [Errno 111] Connection refused>``; and
    the Normaliser's ``decode_error: ...`` (HTML saved as .jpg, truncated, empty) and
    ``too_many_pixels: ...``.
    """
    if error_message is None:
        return records.PENDING, ""
    refused = error_message.split(": ", 1)[0]
    if refused in _PIXEL_STATUS:
        return _PIXEL_STATUS[refused], refused
    http = _HTTP_ERROR.match(error_message)
    if http:
        return records.FAILED, f"download_http_{http.group(1)}"
    if _TIMEOUT.search(error_message):
        return records.FAILED, "download_timeout"
    if error_message.startswith(_ROBOTS_DISALLOWED):
        # The site asked (noai, noimageai, ...) not to use the image: a decision, not a failure.
        return records.REJECTED, "site_disallowed"
    return records.FAILED, "download_error"


def results(out_dir: Path) -> pa.Table:
    """One row per candidate of ``out_dir`` (RESULT_SCHEMA), read without image bytes."""
    out_dir = Path(out_dir)
    candidates = pq.read_table(out_dir / CANDIDATES, columns=[KEY_COLUMN])
    fetched = _fetched(out_dir, [KEY_COLUMN, "status", "error_message", "sha256",
                                 "original_width", "original_height"])
    by_key = {}
    if fetched is not None:
        by_key = {row[KEY_COLUMN]: row for row in fetched.to_pylist()}
    rows = [_result_row(key, by_key.get(key)) for key in candidates[KEY_COLUMN].to_pylist()]
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def _result_row(key: str, row: dict | None) -> dict:
    if row is None:
        return dict(key=key, status=records.FAILED, reason="not_fetched", detail=NOT_FETCHED_DETAIL)
    if row["status"] != "success":
        status, reason = fate(row["error_message"] or row["status"])
        return dict(key=key, status=status, reason=reason, detail=row["error_message"])
    return dict(key=key, status=records.PENDING, reason="", detail=None, sha256=row["sha256"],
                original_width=row["original_width"], original_height=row["original_height"])


def empty_results() -> pa.Table:
    return RESULT_SCHEMA.empty_table()


def _fetched(out_dir: Path, columns: list[str], where: pc.Expression | None = None) -> pa.Table | None:
    """img2dataset's rows from the shards it finished (a stats file is written after the parquet)."""
    folder = out_dir / IMAGES
    files = [str(folder / f"{stats.name.removesuffix('_stats.json')}.parquet")
             for stats in sorted(folder.glob("*_stats.json"))]
    if not files:
        return None
    return ds.dataset(files, format="parquet").to_table(columns=columns, filter=where)


def read_images(out_dir: Path, keys: Iterable[str]) -> dict[str, bytes]:
    """The stored image of each key (8-bit sRGB JPEG, see curate.pixels); KeyError for keys without one."""
    out_dir = Path(out_dir)
    wanted = set(keys)
    if not wanted:
        return {}
    found = _fetched(out_dir, [KEY_COLUMN, ENCODE_COLUMN],
                     pc.field(KEY_COLUMN).isin(pa.array(sorted(wanted), pa.string()))
                     & pc.field(ENCODE_COLUMN).is_valid())
    images = {} if found is None else dict(zip(found[KEY_COLUMN].to_pylist(), found[ENCODE_COLUMN].to_pylist()))
    missing = wanted - images.keys()
    if missing:
        raise KeyError(f"{out_dir / IMAGES}: no image for keys {sorted(missing)[:5]} "
                       f"({len(missing)} of {len(wanted)}; failed or not fetched)")
    return images


# ---------------------------------------------------------------- stage


class ApplyFetch:
    """Stage: pending records -> their fetch fate, sha256 and original size.

    A pending record with no fetch result was never handed to the fetcher: failed/not_fetched.
    Records already decided pass through untouched.
    """

    def __init__(self, fetched: pa.Table):
        self.by_key = {row["key"]: row for row in fetched.select(["key", *_FETCHED_COLUMNS]).to_pylist()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = records.conform(batch)  # a Ray batch may carry all-null columns typed null
        rows = batch.to_pylist()
        for row in rows:
            if row["status"] == records.PENDING:
                row.update(self.by_key.get(row["key"]) or dict(
                    status=records.FAILED, reason="not_fetched", detail="no fetch result for this record",
                    sha256=None, original_width=None, original_height=None))
        return pa.Table.from_pylist(rows, schema=batch.schema)
