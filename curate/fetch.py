"""The fetch stage: candidate urls -> stored images, sha256 and original size, via img2dataset.

Layout of a fetch folder (one per source in a run)::

    candidates.parquet   the url list img2dataset reads: ``record_key``, ``url``, sorted by key
    decided.parquet      fates given before download (``curate.rights.steps.before_fetch``), if any
    settings.json        the FetchSettings this folder was fetched with
    images/              img2dataset's output: ``NNNNN.parquet`` per shard (metadata + the stored
                         image in ``jpg``), ``NNNNN_stats.json`` written after the parquet is closed
    retry-N/             a resumed fetch's pass over the URLs whose last fate was retryable
                         (``retryable``): its own ``candidates.parquet`` and ``images/``

A resumed fetch first finishes any pass left unfinished (img2dataset resumes its shards);
when every pass had finished, it asks again for the URLs that failed retryably, each at most
``resume_retries`` times. A key's result is its row of the latest pass that has one, and
``attempts`` counts the passes that asked for it: successful rows stay where they are.

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

import bisect
import functools
import importlib
import math
import os
import re
import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate import pixels, records, stages
from curate.io import atomic_path, write_parquet_atomic, write_text_atomic
from curate.rights.embedded import COLUMN as RIGHTS

if TYPE_CHECKING:
    from curate.rights.download import HostLimits

STAGE = "fetch"
stages.declare(STAGE, rejected={
    "site_disallowed": "the image's server sent an X-Robots-Tag such as noai",
    "too_many_pixels": "more pixels than fetch max_pixels (a decompression bomb, or just too big)",
}, failed={
    "download_timeout": "no answer within the fetch timeout",
    "download_error": "the download failed (connection refused, reset, ...); download_http_<code>: an HTTP error",
    "not_fetched": "the fetcher returned no row for the record",
})

# albumentations (imported by img2dataset) asks PyPI for a newer version at import time:
# without network that is a stall and a warning in every worker process (they inherit this).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CANDIDATES = "candidates.parquet"
DECIDED = "decided.parquet"
SETTINGS = "settings.json"
IMAGES = "images"
RETRY = "retry-"  # retry-1, retry-2, ...: the passes of resumed fetches
# img2dataset writes a ``key`` column of its own (shard + row), so ours travels under this name.
KEY_COLUMN = "record_key"
ENCODE_COLUMN = "jpg"

RESULT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("original_width", pa.int32()),  # as displayed (EXIF orientation applied), before resize
        pa.field("original_height", pa.int32()),
        pa.field(RIGHTS, pa.string()),  # JSON: rights metadata of the original and its TDM headers (curate.rights)
        pa.field("image_file", pa.string()),  # where the stored image is: <source>/images/NNNNN.parquet ...
        pa.field("image_row", pa.int64()),  # ... and its row there (read_located reads it without a scan)
        pa.field("attempts", pa.int32()),  # fetch passes that asked for the URL (the first, then each resume's)
    ]
)
_FETCHED_COLUMNS = tuple(RESULT_SCHEMA.names[1:])
RESULTS = "results.parquet"
FETCHED = "fetched_"  # prefix of the result columns joined onto records for ApplyFetch
BATCH_ROWS = 50_000
NOT_FETCHED_DETAIL = "img2dataset wrote no row for this key (its shard did not complete)"


class FetchSettings(BaseModel):
    """Politeness and encoding settings for one source; see img2dataset.download for each.

    The resize fields keep img2dataset's names and meaning, but ``curate.pixels`` applies them.
    """

    model_config = ConfigDict(extra="forbid")

    processes_count: int = Field(1, ge=1, description="Download processes (with the multiprocessing distributor).")
    thread_count: int = Field(8, ge=1, description="Download threads per process.")
    timeout: float = Field(10, gt=0, description="Seconds per request.")
    retries: int = Field(0, ge=0, description="Attempts after the first for a URL that failed.")
    host_requests_per_second: float | None = Field(None, gt=0, description=(
        "Image requests started per second to any one host, by the whole fetch; null: no limit. Each "
        "download process keeps to this divided by the processes that run at once (processes_count, or "
        "with ray the CPUs, and never more than the shards), its threads sharing one limiter per host."))
    host_concurrency: int | None = Field(None, ge=1, description=(
        "Image requests open at once to any one host, by the whole fetch; null: no limit. Divided like "
        "host_requests_per_second among the processes that run at once, so at least processes_count."))
    busy_retries: int = Field(3, ge=0, description=(
        "Attempts after the first for an image answered 429 or 503, each after the server's Retry-After or "
        "the backoff (the process sends that host nothing meanwhile); then it fails download_http_429 or "
        "_503, which a resumed run asks again."))
    backoff_s: float = Field(1.0, ge=0, description=(
        "Backoff after a 429 or 503: about backoff_s * 2**attempt (half of it random), or the server's "
        "longer Retry-After."))
    backoff_max_s: float = Field(60, ge=0, description=(
        "The longest backoff; a Retry-After asking for more fails the image at once (a resumed run asks again)."))
    resume_retries: int = Field(2, ge=0, description=(
        "Resumed runs that ask again for an image whose fetch failed retryably (a timeout, a connection "
        "error, 429, 5xx; not a 404, a refusal or a file that does not decode); the results count its attempts."))
    user_agent_token: str = Field("cleanroom", description="Added to the User-Agent of every image request.")
    # img2dataset's own default.
    disallowed_header_directives: list[str] = Field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"],
        description="X-Robots-Tag directives that forbid using the image: a response with one is not kept.")
    image_size: int = Field(1024, ge=1, description="The stored image's target size in pixels (see resize_mode).")
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = Field(
        "keep_ratio", description="How the stored image is fitted to image_size, as img2dataset's modes.")
    # img2dataset's keep_ratio otherwise *enlarges* images smaller than image_size.
    resize_only_if_bigger: bool = Field(True, description="Leave images smaller than image_size at their size.")
    encode_format: Literal["jpg"] = Field("jpg", description="The stored image's format.")
    encode_quality: int = Field(95, ge=0, le=100, description="JPEG quality of the stored image.")
    # Pillow itself refuses more than its limit as a decompression bomb.
    max_pixels: int = Field(pixels.PILLOW_MAX_PIXELS, ge=1, le=pixels.PILLOW_MAX_PIXELS, description=(
        "Images with more pixels are rejected (too_many_pixels) from their header, before decoding."))
    number_sample_per_shard: int = Field(1000, ge=1, description="Images per fetch-results file under OUT/work.")
    distributor: Literal["auto", "multiprocessing", "ray"] = Field("auto", description=(
        "ray: each fetch shard is a task on the run's Ray, whose CPUs bound the parallelism "
        "(processes_count is then unused); multiprocessing: processes on the driver's machine; auto: ray "
        "when the run's Ray has more than one node (a cluster), else multiprocessing."))

    @model_validator(mode="after")
    def _a_request_per_process(self) -> "FetchSettings":
        if (self.host_concurrency is not None and self.distributor != "ray"
                and self.host_concurrency < self.processes_count):
            raise ValueError(f"host_concurrency {self.host_concurrency} < processes_count {self.processes_count}: "
                             "each download process needs at least one request open per host")
        return self

    def target(self) -> pixels.Target:
        return pixels.Target(size=self.image_size, mode=self.resize_mode, only_if_bigger=self.resize_only_if_bigger,
                             quality=self.encode_quality, max_pixels=self.max_pixels)

    def resolved(self) -> "FetchSettings":
        """These settings with ``auto`` decided for the Ray this process runs in."""
        if self.distributor != "auto":
            return self
        import ray

        nodes = sum(node["Alive"] for node in ray.nodes()) if ray.is_initialized() else 1
        return self.model_copy(update={"distributor": "ray" if nodes > 1 else "multiprocessing"})

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


def download(candidates: pa.Table, out_dir: Path, settings: FetchSettings, decided: pa.Table | None = None) -> Path:
    """Fetch every candidate's url into ``out_dir`` (resumable; a no-op once finished).

    ``candidates`` needs columns ``key`` and ``url`` (others are ignored). Returns ``out_dir``.
    Runs img2dataset in this process's main thread: it installs a SIGINT handler, which
    Python allows only there (we restore the previous one afterwards).
    """
    out_dir, settings = Path(out_dir), settings.resolved()
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"fetch.download({out_dir}) must run in the main thread: "
                           "img2dataset installs a SIGINT handler")
    url_list = _url_list(candidates)
    _write_candidates(url_list, out_dir / CANDIDATES)
    if decided is not None and decided.num_rows:  # their fates join the results; they are not downloaded
        write_parquet_atomic(decided, out_dir / DECIDED)
    write_text_atomic(settings.model_dump_json(indent=2), out_dir / SETTINGS)
    if url_list.num_rows == 0:
        return out_dir
    passes = _passes(out_dir)
    if all(_finished(folder, settings) for folder in passes):  # a finished fetch: ask again what may answer now
        retry = out_dir / f"{RETRY}{len(passes)}"
        if _write_retry_list(out_dir, settings.resume_retries, retry / CANDIDATES):
            passes.append(retry)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        for folder in passes:
            if not _finished(folder, settings):
                _img2dataset(folder / CANDIDATES, folder / IMAGES, settings)
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


def _passes(out_dir: Path) -> list[Path]:
    """The folders of the fetch's passes, in order: ``out_dir`` itself, then retry-1, retry-2, ..."""
    retries = [d for d in out_dir.glob(f"{RETRY}*")
               if d.name.removeprefix(RETRY).isdigit() and (d / CANDIDATES).exists()]
    return [out_dir, *sorted(retries, key=lambda d: int(d.name.removeprefix(RETRY)))]


def _shards(url_list: Path, settings: FetchSettings) -> int:
    return math.ceil(pq.ParquetFile(url_list).metadata.num_rows / settings.number_sample_per_shard)


def _finished(folder: Path, settings: FetchSettings) -> bool:
    return len(list((folder / IMAGES).glob("*_stats.json"))) >= _shards(folder / CANDIDATES, settings)


def _write_retry_list(out_dir: Path, resume_retries: int, path: Path) -> bool:
    """The url list of the keys whose last fate is retryable and that were asked at most resume_retries times,
    streamed to ``path``; False (and no file) when there is none."""
    schema = pa.schema([pa.field(KEY_COLUMN, pa.string()), pa.field("url", pa.string())])
    writer = None
    with ExitStack() as stack:
        for batch in _located_batches(out_dir):
            again = [row for row in batch.to_pylist() if row["attempts"] is not None
                     and row["attempts"] <= resume_retries and retryable(_result_row(out_dir, row)["reason"])]
            if again and writer is None:
                writer = stack.enter_context(pq.ParquetWriter(stack.enter_context(atomic_path(path)), schema))
            if again:
                writer.write_batch(pa.RecordBatch.from_pylist(again, schema=schema))
    return writer is not None


def processes_at_once(settings: FetchSettings, shards: int) -> int:
    """How many download processes run at once: the per-host limits are shared among them."""
    if settings.distributor == "ray":
        import ray

        # img2dataset's ray distributor: a 1-CPU task per shard
        workers = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else os.cpu_count() or 1
    else:
        workers = settings.processes_count
    return max(1, min(workers, shards))


def host_limits(settings: FetchSettings, processes: int) -> HostLimits:
    """One download process's share of the per-host limits."""
    from curate.rights.download import HostLimits  # imports img2dataset

    if settings.host_concurrency is not None and settings.host_concurrency < processes:
        raise ValueError(f"fetch host_concurrency {settings.host_concurrency} is less than the {processes} "
                         "download processes that run at once: each needs at least one request open per host")
    rate = settings.host_requests_per_second
    return HostLimits(requests_per_second=None if rate is None else rate / processes,
                      concurrency=None if settings.host_concurrency is None else settings.host_concurrency // processes,
                      busy_retries=settings.busy_retries, backoff_s=settings.backoff_s,
                      backoff_max_s=settings.backoff_max_s)


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

    from curate.rights import download as rights_download  # imports img2dataset

    # The Downloader too: it keeps the TDM response headers and our ``rights`` column, and asks politely
    # (curate.rights.download).
    limits = host_limits(settings, processes_at_once(settings, _shards(url_list, settings)))
    original, main.Resizer = main.Resizer, resizer
    downloader, main.Downloader = main.Downloader, functools.partial(rights_download.Downloader, limits=limits)
    try:
        img2dataset.download(url_list=str(url_list), output_folder=str(output), **settings.img2dataset_args())
    finally:
        main.Resizer, main.Downloader = original, downloader
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


_RETRYABLE_HTTP = re.compile(r"^download_http_(429|5\d\d)$")


def retryable(reason: str) -> bool:
    """Whether asking again may give another answer: a timeout, a connection error, a 429 or a 5xx.
    Not a 404 or another 4xx, a site's refusal, or bytes that do not decode."""
    return reason in ("download_timeout", "download_error") or bool(_RETRYABLE_HTTP.match(reason))


def results(out_dir: Path) -> pa.Table:
    """One row per candidate of ``out_dir`` (RESULT_SCHEMA), read without image bytes."""
    return pa.Table.from_batches(list(_result_batches(Path(out_dir))), schema=RESULT_SCHEMA)


def write_results(out_dir: Path) -> Path:
    """``results`` written to ``out_dir/results.parquet`` batch by batch: a source of millions never in memory."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / RESULTS) as tmp, pq.ParquetWriter(tmp, RESULT_SCHEMA) as writer:
        for batch in _result_batches(out_dir):
            writer.write_batch(batch)
    return out_dir / RESULTS


def _result_batches(out_dir: Path) -> Iterator[pa.RecordBatch]:
    """Every candidate's latest row, then the fates decided before download, as result batches in key order."""
    for batch in _located_batches(out_dir):
        yield pa.RecordBatch.from_pylist([_result_row(out_dir, row) for row in batch.to_pylist()], schema=RESULT_SCHEMA)
    if (out_dir / DECIDED).exists():
        for batch in pq.ParquetFile(out_dir / DECIDED).iter_batches(BATCH_ROWS):
            yield pa.RecordBatch.from_pylist(batch.to_pylist(), schema=RESULT_SCHEMA)


_FETCHED_FIELDS = (KEY_COLUMN, "status", "error_message", "sha256", "original_width", "original_height", RIGHTS)


def _located_batches(out_dir: Path) -> Iterator[pa.RecordBatch]:
    """The candidates joined with the row of the latest pass that has one, with ``pass`` and ``attempts``
    (by DuckDB, which spills), in key order."""
    con = duckdb.connect()
    con.register("candidates", con.read_parquet(str(out_dir / CANDIDATES)).select(f"{KEY_COLUMN}, url"))
    parts, params = [], []
    for number, folder in enumerate(_passes(out_dir)):
        files = _finished_files(folder)
        if files:
            parts.append(f"SELECT {', '.join(_FETCHED_FIELDS)}, filename, file_row_number, ?::INTEGER AS pass "
                         "FROM read_parquet(?, filename=true, file_row_number=true, union_by_name=true)")
            params += [number, files]
    if parts:
        joined = con.sql(f"""
            WITH fetched AS ({' UNION ALL BY NAME '.join(parts)}),
            latest AS (SELECT *, count(*) OVER (PARTITION BY {KEY_COLUMN})::INTEGER AS attempts FROM fetched
                       QUALIFY row_number() OVER (PARTITION BY {KEY_COLUMN} ORDER BY pass DESC) = 1)
            SELECT * FROM candidates c LEFT JOIN latest l USING ({KEY_COLUMN}) ORDER BY {KEY_COLUMN}""",
                         params=params)
    else:
        joined = con.sql(f"SELECT {KEY_COLUMN}, url FROM candidates ORDER BY {KEY_COLUMN}")
    yield from joined.to_arrow_reader(BATCH_ROWS)


def _result_row(out_dir: Path, row: dict) -> dict:
    key = row[KEY_COLUMN]
    if row.get("status") is None:
        return dict(key=key, status=records.FAILED, reason="not_fetched", detail=NOT_FETCHED_DETAIL, stage=STAGE)
    if row["status"] != "success":
        status, reason = fate(row["error_message"] or row["status"])
        return dict(key=key, status=status, reason=reason, detail=row["error_message"], stage=STAGE,
                    attempts=row["attempts"])
    folder = f"{RETRY}{row['pass']}/{IMAGES}" if row["pass"] else IMAGES
    return dict(key=key, status=records.PENDING, reason="", detail=None, stage=None, sha256=row["sha256"],
                original_width=row["original_width"], original_height=row["original_height"], rights=row[RIGHTS],
                image_file=f"{out_dir.name}/{folder}/{Path(row['filename']).name}", image_row=row["file_row_number"],
                attempts=row["attempts"])


def empty_results() -> pa.Table:
    return RESULT_SCHEMA.empty_table()


def _finished_files(folder: Path) -> list[str]:
    """img2dataset's parquet files of the shards one pass finished (a stats file is written after the parquet)."""
    folder = folder / IMAGES
    return [str(folder / f"{stats.name.removesuffix('_stats.json')}.parquet")
            for stats in sorted(folder.glob("*_stats.json"))]


def _fetched(out_dir: Path, columns: list[str], where: pc.Expression | None = None) -> pa.Table | None:
    files = [file for folder in _passes(out_dir) for file in _finished_files(folder)]
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


def read_located(fetch_root: Path, rows: Iterable[dict]) -> dict[str, bytes]:
    """The stored image of each row by its ``image_file`` and ``image_row``: only the row groups holding them
    are read, so a lookup costs the same however many images the run has."""
    wanted: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        if row.get("image_file") is None:
            raise KeyError(f"record {row['key']}: no stored image (image_file is empty; failed or not fetched?)")
        wanted.setdefault(row["image_file"], []).append((row["image_row"], row["key"]))
    images = {}
    for name, located in wanted.items():
        images.update(_read_rows(Path(fetch_root) / name, located))
    return images


def _read_rows(path: Path, located: list[tuple[int, str]]) -> dict[str, bytes]:
    parquet = pq.ParquetFile(path)
    starts, at = [], 0
    for group in range(parquet.num_row_groups):
        starts.append(at)
        at += parquet.metadata.row_group(group).num_rows
    by_group: dict[int, list[tuple[int, str]]] = {}
    for row, key in located:
        group = bisect.bisect_right(starts, row) - 1
        by_group.setdefault(group, []).append((row - starts[group], key))
    images = {}
    for group, members in by_group.items():
        table = parquet.read_row_group(group, columns=[KEY_COLUMN, ENCODE_COLUMN])
        for offset, key in members:
            if table[KEY_COLUMN][offset].as_py() != key:  # the fetch folder changed under the run
                raise KeyError(f"{path}: row {starts[group] + offset} holds {table[KEY_COLUMN][offset]}, not {key}")
            images[key] = table[ENCODE_COLUMN][offset].as_py()
    return images


# ---------------------------------------------------------------- stage

# Records joined with their source's results, each result column under FETCHED + its name (null: no result).
_JOIN = ("SELECT i.*, " + ", ".join(f"r.{name} AS {FETCHED}{name}" for name in RESULT_SCHEMA.names)
         + " FROM ingest i LEFT JOIN results r USING (key)")


def join_results(ingest_glob: str, result_files: list[Path], target: Path) -> None:
    """Write the ingested records with their fetch results joined on (``ApplyFetch`` applies them).

    DuckDB streams the join from the parquet files into the folder ``target``, spilling to disk as it
    needs: no process holds the run's records or results. Files of bounded size, so Ray reads them
    in parallel.
    """
    con = duckdb.connect()
    con.register("ingest", con.read_parquet(ingest_glob))
    files = [str(f) for f in result_files]
    con.register("results", con.read_parquet(files) if files else con.from_arrow(RESULT_SCHEMA.empty_table()))
    con.execute(f"COPY ({_JOIN}) TO ? (FORMAT parquet, FILE_SIZE_BYTES '64MB', ROW_GROUP_SIZE 10000)",
                [str(target)])


def attach_results(table: pa.Table, fetched: pa.Table) -> pa.Table:
    """``join_results`` for tables in memory: the same join."""
    con = duckdb.connect()
    con.register("ingest", table)
    con.register("results", fetched)
    return con.sql(_JOIN).to_arrow_table()


class ApplyFetch:
    """Stage: pending records -> their fetch fate, sha256, original size, rights and image location.

    Reads the result columns ``join_results`` put beside each record, and drops them. A pending
    record with no fetch result was never handed to the fetcher: failed/not_fetched. Records
    already decided pass through untouched.
    """

    def __call__(self, batch: pa.Table) -> pa.Table:
        joined = [FETCHED + name for name in RESULT_SCHEMA.names]
        results = batch.select(joined).rename_columns(RESULT_SCHEMA.names).to_pylist()
        batch = records.conform(batch.drop_columns(joined))  # a Ray batch may carry all-null columns typed null
        if RIGHTS not in batch.column_names:  # a column fetch owns, read by curate.rights' filters
            batch = batch.append_column(pa.field(RIGHTS, pa.string()), pa.nulls(batch.num_rows, pa.string()))
        rows = batch.to_pylist()
        for row, result in zip(rows, results):
            if row["status"] != records.PENDING:
                continue
            if result["key"] is None:
                result = dict(status=records.FAILED, reason="not_fetched", detail="no fetch result for this record",
                              stage=STAGE, **{name: None for name in _FETCHED_COLUMNS[4:]})
            row.update({name: result[name] for name in _FETCHED_COLUMNS})
        return pa.Table.from_pylist(rows, schema=batch.schema)
