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
XMP, comment or text chunk survives. Only the ICC colour profile is kept: it changes how
the pixels look and says nothing about the contributor.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Callable, TypeVar

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from curate.optin.errors import UploadRefused
from curate.optin.options import Limits

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


def clean(data: bytes, limits: Limits) -> CleanImage:
    """Check untrusted bytes and return the clean copy to store; raises UploadRefused."""
    if len(data) > limits.max_bytes:
        raise UploadRefused("too_large", f"the image has {len(data)} bytes; the limit is {limits.max_bytes}")
    kind = sniff(data)
    if kind is None:
        raise UploadRefused("not_an_image", f"not a JPEG, PNG or WebP image: {_describe(data)}")
    image = _open(data, kind, limits)
    _strip_gps(image)
    oriented = ImageOps.exif_transpose(image)
    encoded = _encode(oriented, kind, image.info.get("icc_profile"))
    return CleanImage(data=encoded, format=kind, width=oriented.width, height=oriented.height,
                      sha256=hashlib.sha256(encoded).hexdigest())


def _open(data: bytes, kind: str, limits: Limits) -> Image.Image:
    """Decoded image of the sniffed format, refusing bombs before decoding, and animations."""
    image = _pillow(kind, lambda: Image.open(io.BytesIO(data), formats=[kind]))
    width, height = image.size
    if width * height > limits.max_pixels:
        raise UploadRefused("too_many_pixels", f"the image claims {width}x{height} = {width * height} pixels; "
                                               f"the limit is {limits.max_pixels}")
    frames = _pillow(kind, lambda: getattr(image, "n_frames", 1))
    if frames > 1:
        raise UploadRefused("animated", f"the image has {frames} frames; send a still image")
    _pillow(kind, image.load)
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
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
    pixels = image.convert(_target_mode(image, kind))
    # convert() copies ``info`` (EXIF, XMP, comments, text chunks), and some encoders write
    # what they find there: start from an empty one.
    pixels.info = {}
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    buffer = io.BytesIO()
    pixels.save(buffer, kind, **_SAVE_ARGS[kind], **extra)
    return buffer.getvalue()
