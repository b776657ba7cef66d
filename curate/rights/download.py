"""What img2dataset must keep for the rights checks: the image response's TDM headers and a ``rights`` column.

img2dataset drops the response headers once it has checked X-Robots-Tag, and its output
has no column for what a resizer finds. So ``fetch`` hands img2dataset ``Downloader``
in place of its own (by the same name swap as the resizer, see ``curate.fetch``), which
in each worker process (spawned or a Ray task, where it is unpickled):

- downloads with ``download_image``: img2dataset's own request (the same User-Agent, the
  X-Robots-Tag check), whose stream also carries the TDMRep response headers, which the
  Normaliser reads (``curate.pixels``);
- writes with ``RightsWriter``: img2dataset's parquet writer plus a ``rights`` column,
  filled from the ``embedded.Stored`` image the Normaliser returns.
"""

from __future__ import annotations

import io
import urllib.request

import img2dataset.downloader as downloader_module
from img2dataset.downloader import Downloader as _Downloader
from img2dataset.downloader import is_disallowed
from img2dataset.writer import ParquetSampleWriter

import pyarrow as pa

from curate.rights import tdmrep
from curate.rights.embedded import COLUMN as RIGHTS_COLUMN

KEPT_HEADERS = (tdmrep.HEADER, tdmrep.POLICY_HEADER)


class Original(io.BytesIO):
    """The downloaded bytes, with the response headers the rights checks read (lower-case names)."""

    def __init__(self, data: bytes, headers: dict[str, str]):
        super().__init__(data)
        self.headers = headers


def download_image(row, timeout, user_agent_token, disallowed_header_directives):
    """img2dataset 1.47's ``download_image``, keeping the TDMRep headers with the bytes."""
    key, url = row
    user_agent_string = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
    if user_agent_token:
        user_agent_string += f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)"
    try:
        request = urllib.request.Request(url, data=None, headers={"User-Agent": user_agent_string})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if disallowed_header_directives and is_disallowed(r.headers, user_agent_token,
                                                              disallowed_header_directives):
                return key, None, "Use of image disallowed by X-Robots-Tag directive"
            headers = {name: r.headers[name] for name in KEPT_HEADERS if r.headers.get(name) is not None}
            return key, Original(r.read(), headers), None
    except Exception as err:  # noqa: BLE001  img2dataset's contract: the error's text is the sample's message
        return key, None, str(err)


class RightsWriter(ParquetSampleWriter):
    """img2dataset's parquet writer with the Normaliser's findings in a ``rights`` column (JSON or null)."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        super().__init__(shard_id, output_folder, save_caption, oom_shard_count,
                         schema.append(pa.field(RIGHTS_COLUMN, pa.string())), encode_format)

    def write(self, img_str, key, caption, meta):
        rights = getattr(img_str, "rights", None)
        super().write(None if img_str is None else bytes(img_str), key, caption, {**meta, RIGHTS_COLUMN: rights})


class Downloader(_Downloader):
    def __init__(self, *args, sample_writer_class, **kwargs):
        if not callable(getattr(downloader_module, "download_image", None)):
            # Else the TDM headers would silently go unread: refuse, as fetch does for the resizer.
            raise RuntimeError("img2dataset.downloader has no download_image to keep the TDM headers with: "
                               "install img2dataset==1.47.0 (pip install -c constraints.txt ...)")
        if sample_writer_class is not ParquetSampleWriter:
            raise ValueError(f"curate.rights.download keeps its column in parquet output only, "
                             f"not {sample_writer_class.__name__}")
        super().__init__(*args, sample_writer_class=RightsWriter, **kwargs)

    def download_shard(self, row):
        # This worker process's img2dataset downloads through ours from now on (idempotent).
        downloader_module.download_image = download_image
        return super().download_shard(row)
