"""Checks on untrusted image bytes, and the clean copy we keep of an image that passes.

In order, each refusal an ``UploadRefused`` with a code:

1. ``too_large``: more bytes than ``Limits.max_bytes``.
2. ``not_an_image``: the type is sniffed from the first bytes (JPEG, PNG, WebP magic
   numbers), never taken from a file name or a Content-Type header; HTML, SVG and scripts
   named ``.jpg`` stop here. Pillow then opens the bytes with that one format's decoder only.
3. ``too_many_pixels``: width x height from the header, before any pixel is decoded, against
   ``Limits.max_pixels`` (the decompression-bomb guard); Pillow's own bomb warning counts as
   a refusal too.
4. ``animated``, ``decode_error``: one frame, decodable to the end.

The clean copy: GPS data is removed first, then the EXIF orientation is applied to the
pixels, then the image is re-encoded from pixels alone in its sniffed format, so no EXIF,
XMP, comment, text chunk or ICC profile survives. An image with a profile is converted to
sRGB first (``curate.pixels.srgb``, transparency over white, as the pipeline stores it): a
profile is free-form bytes that can hold a name and an address, and a junk one is dropped.
EXIF that Pillow cannot parse is a ``decode_error`` too, never a server error.

Decoding costs memory in proportion to pixels, not bytes (a 164 KiB PNG can hold 40
megapixels), so decodes share a ``PixelBudget``: an upload waits for room, and is refused
as ``busy`` when none comes in time.
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, TypeVar

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from curate.optin.errors import Busy, UploadRefused
from curate.optin.options import Limits
from curate.pixels import srgb

# Sniffed format -> (media type, file extension of the stored copy).
FORMATS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WEBP": ("image/webp", "webp")}
T = TypeVar("T")
_SAVE_ARGS = {"JPEG": {"quality": 95}, "PNG": {}, "WEBP": {"quality": 95}}


@dataclass(frozen=True)
class CleanImage:
    data: bytes  # the re-encoded image we store
    format: str  # a key of FORMATS
    width: int  # after orientation
    height: int
    sha256: str  # of ``data``: the stored file's name

    @property
    def media_type(self) -> str:
        return FORMATS[self.format][0]

    @property
    def file_name(self) -> str:
        return f"{self.sha256}.{FORMATS[self.format][1]}"


class PixelBudget:
    """Decoded pixels allowed at once, shared by the threads that clean images."""

    def __init__(self, pixels: int, wait_s: float):
        self.pixels, self.wait_s = pixels, wait_s
        self._free = pixels
        self._room = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget (at most all of it) while the block runs; Busy when no room
        comes within ``wait_s``."""
        need = min(pixels, self.pixels)
        deadline = time.monotonic() + self.wait_s
        with self._room:
            while self._free < need:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Busy("the server is decoding too many images right now; try again in a minute")
                self._room.wait(left)
            self._free -= need
        try:
            yield
        finally:
            with self._room:
                self._free += need
                self._room.notify_all()


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe(data: bytes) -> str:
    head = data[:256].lstrip().lower()
    if head.startswith((b"<", b"\xef\xbb\xbf<")):
        return "it looks like markup (HTML, SVG or XML)"
    if head.startswith((b"#!", b"function", b"var ", b"let ", b"const ", b"import ")):
        return "it looks like a script"
    return f"it starts with {data[:8].hex() or 'nothing'}"


def clean(data: bytes, limits: Limits, budget: PixelBudget | None = None) -> CleanImage:
    """Check untrusted bytes and return the clean copy to store; raises UploadRefused (or Busy)."""
    if len(data) > limits.max_bytes:
        raise UploadRefused("too_large", f"the image has {len(data)} bytes; the limit is {limits.max_bytes}")
    kind = sniff(data)
    if kind is None:
        raise UploadRefused("not_an_image", f"not a JPEG, PNG or WebP image: {_describe(data)}")
    image = _open(data, kind, limits)
    room: ContextManager[None] = budget.hold(image.width * image.height) if budget else nullcontext()
    with room:
        _pillow(kind, image.load)
        _pillow(kind, lambda: _strip_gps(image))
        oriented = _pillow(kind, lambda: ImageOps.exif_transpose(image))
        encoded = _pillow(kind, lambda: _encode(oriented, kind, image.info.get("icc_profile")))
    return CleanImage(data=encoded, format=kind, width=oriented.width, height=oriented.height,
                      sha256=hashlib.sha256(encoded).hexdigest())


def _open(data: bytes, kind: str, limits: Limits) -> Image.Image:
    """The image of the sniffed format, header read only, refusing bombs and animations."""
    image = _pillow(kind, lambda: Image.open(io.BytesIO(data), formats=[kind]))
    width, height = image.size
    if width * height > limits.max_pixels:
        raise UploadRefused("too_many_pixels", f"the image claims {width}x{height} = {width * height} pixels; "
                                               f"the limit is {limits.max_pixels}")
    frames = _pillow(kind, lambda: getattr(image, "n_frames", 1))
    if frames > 1:
        raise UploadRefused("animated", f"the image has {frames} frames; send a still image")
    return image


def _pillow(kind: str, step: Callable[[], T]) -> T:
    """Run a Pillow step with its errors as refusals."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its MAX_IMAGE_PIXELS and raises above twice that; both refuse here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return step()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadRefused("too_many_pixels", f"refused as a decompression bomb: {e}") from None
    # TypeError and struct.error: what Pillow's EXIF parser raises on a corrupt block (seen in WebP).
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, TypeError, struct.error) as e:
        raise UploadRefused("decode_error", f"the {kind} image cannot be decoded: {e}") from None


def _strip_gps(image: Image.Image) -> None:
    """Drop the GPS block from the EXIF the orientation step reads, so no later step can carry it."""
    exif = image.getexif()
    exif.pop(ExifTags.IFD.GPSInfo, None)


def _target_mode(image: Image.Image, kind: str) -> str:
    if image.mode in ("1", "L"):
        return "L"
    if kind != "JPEG" and (image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info):
        return "RGBA"
    return "RGB"


def _encode(image: Image.Image, kind: str, icc_profile: bytes | None) -> bytes:
    if icc_profile:
        image.info["icc_profile"] = icc_profile  # exif_transpose may have left it behind
        pixels = srgb(image)
    else:
        pixels = image.convert(_target_mode(image, kind))
    # convert() copies ``info`` (EXIF, XMP, comments, text chunks, the profile), and some
    # encoders write what they find there: start from an empty one.
    pixels.info = {}
    buffer = io.BytesIO()
    pixels.save(buffer, kind, **_SAVE_ARGS[kind])
    return buffer.getvalue()
