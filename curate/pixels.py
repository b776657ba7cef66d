"""Image bytes -> pixels that look like the original: the one place images are decoded.

Fetch (``Normaliser``, run inside img2dataset) turns each downloaded original into the
image we store: decoded with Pillow, EXIF orientation applied, samples above 8 bits scaled
(not clipped) to 8, transparency composited over white (what a web page shows it on;
img2dataset made the same choice), the ICC profile converted to sRGB (CMYK and grey
included; without a profile the pixels are taken as sRGB, as browsers do), resized, and
re-encoded as an 8-bit sRGB JPEG from the pixels alone, so no EXIF (GPS included), XMP,
comment or profile reaches a shard. What the original says of its rights and origin
(XMP, IPTC, generators' PNG text, C2PA) is read first, from the loaded original
(``curate.rights.embedded``), and leaves with the stored image as data, never as metadata.
The later image stages read that stored JPEG back with ``rgb``.

Refusals are ``PixelError``s with a reason code: ``too_many_pixels`` (a decompression bomb,
or just more pixels than ``Target.max_pixels``: refused from the header, before any pixel
is decoded) and ``decode_error`` (not an image, truncated, corrupt), whose message is the
decoder's own.
"""

from __future__ import annotations

import functools
import io
import json
import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from curate.rights import embedded

DECODE_ERROR = "decode_error"
TOO_MANY_PIXELS = "too_many_pixels"
# The formats an original may be in. Others (EPS and PDF, which Pillow hands to Ghostscript;
# PSD, ICO, the scientific ones) are not photographs a collection serves and widen the attack surface.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "JPEG2000", "AVIF", "PPM")
# Pillow raises DecompressionBombError above twice its MAX_IMAGE_PIXELS whatever we ask.
PILLOW_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
ResizeMode = Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"]
ORIENTATION = 0x0112  # the EXIF tag
# EXIF orientation -> the transpose that makes the stored pixels upright (Pillow's exif_transpose table;
# ours so that unreadable EXIF leaves the pixels as stored instead of failing the image).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_TRANSPOSED = {5, 6, 7, 8}  # orientations whose display swaps width and height
# Full-scale sample value of Pillow's modes above 8 bits per sample. Pillow widens 16-bit
# grey (PNM, some TIFF) to 32-bit "I" without rescaling, so "I" is read as 16-bit too.
_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
WHITE = 255


class PixelError(ValueError):
    """An image we cannot or will not store; ``reason`` is a record reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """What a stored image is: size and resize mode as img2dataset names them, JPEG quality, pixel limit."""

    size: int
    mode: ResizeMode = "keep_ratio"
    only_if_bigger: bool = True
    quality: int = 95
    max_pixels: int = PILLOW_MAX_PIXELS


def normalise(data: bytes, target: Target, inspect: Callable[[Image.Image], None] | None = None
              ) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """Original bytes -> (stored JPEG, original size as displayed, stored size); raises PixelError.

    ``inspect`` sees the original image once it is loaded (its metadata complete), before anything
    is converted."""
    image = _open(data, target.max_pixels)
    header = image.size
    _draft(image, target)
    image = _decoded(lambda: _loaded(image))
    if inspect is not None:
        inspect(image)
    orientation = _orientation(image)
    original = _turned(header, orientation)
    image = _decoded(lambda: srgb(_upright(image, orientation)))
    stored = fit(image, _scaled(original, target), target)
    return encode(stored, target.quality), original, stored.size


def rgb(data: bytes) -> Image.Image:
    """An image (a stored one, for a model stage) decoded to 8-bit sRGB RGB; raises PixelError."""
    return _decoded(lambda: srgb(_loaded(_open(data, PILLOW_MAX_PIXELS))))


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image with its header read, refused before decoding when it has too many pixels."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its two limits; ours is checked below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise PixelError(TOO_MANY_PIXELS, f"refused as a decompression bomb: {e}") from None
    except UnidentifiedImageError:
        # Pillow's message names the BytesIO object: say what the bytes are instead.
        raise PixelError(DECODE_ERROR, f"cannot identify image file ({len(data)} bytes, starting "
                                       f"{data[:8].hex() or 'with nothing'}) as {', '.join(FORMATS)}") from None
    except Exception as e:  # noqa: BLE001  hostile bytes break header parsers in many ways
        raise PixelError(DECODE_ERROR, f"{type(e).__name__}: {e}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PixelError(TOO_MANY_PIXELS, f"the image claims {width}x{height} = {width * height} pixels; "
                                          f"the limit is max_pixels={max_pixels}")
    return image


def _loaded(image: Image.Image) -> Image.Image:
    image.load()  # Pillow refuses truncated data here (ImageFile.LOAD_TRUNCATED_IMAGES is off)
    return image


def _decoded(step):
    """Run a decoding step with every decoder failure as a decode_error carrying its message."""
    try:
        return step()
    except PixelError:
        raise
    except Exception as e:  # noqa: BLE001  corrupt data raises OSError, SyntaxError, struct.error, ...
        raise PixelError(DECODE_ERROR, f"{type(e).__name__}: {e}") from None


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001  an unreadable EXIF block says nothing: the pixels are as stored
        return 1


def _turned(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _TRANSPOSED else size


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def _draft(image: Image.Image, target: Target) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the stored size allows: a big original costs less.

    JPEG keeps its EXIF before the pixels, so the orientation is known before decoding."""
    if image.format not in ("JPEG", "MPO"):  # MPO: a camera's JPEG with more pictures after the first
        return
    orientation = _orientation(image)
    scaled = _scaled(_turned(image.size, orientation), target)
    if scaled is not None:
        image.draft(None, _turned(scaled, orientation))  # never below the requested size


def srgb(image: Image.Image) -> Image.Image:
    """Any decoded image -> 8-bit RGB in sRGB, transparency composited over white."""
    profile = image.info.get("icc_profile")
    image = _over_white(_eight_bit(image))
    if profile:
        converted = _to_srgb(image, profile)
        if converted is not None:
            return converted
    return image.convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    full = _FULL_SCALE.get(image.mode)
    if full is None:
        return image
    samples = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.rint(np.clip(samples, 0, full) * (255 / full)).astype(np.uint8), "L")


def _over_white(image: Image.Image) -> Image.Image:
    """Palette, grey or colour with any kind of transparency -> the same without, over white."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif "transparency" in image.info or image.mode in ("PA", "RGBa", "La"):  # tRNS colour, premultiplied
        image = image.convert("LA" if image.mode in ("L", "La") else "RGBA")
    if image.mode not in ("LA", "RGBA"):
        return image
    base = image.mode[:-1]
    flat = Image.new(base, image.size, WHITE if base == "L" else (WHITE,) * 3)
    flat.paste(image.convert(base), mask=image.getchannel("A"))
    return flat


def _to_srgb(image: Image.Image, profile: bytes) -> Image.Image | None:
    """``image`` converted from its ICC profile to sRGB; None for a profile that cannot be read or does not
    fit the image's mode, which browsers ignore too."""
    try:
        return ImageCms.applyTransform(image, _transform(profile, image.mode))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=16)
def _transform(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    # A source usually tags every image with the same profile: build its transform once.
    return ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)), _SRGB, mode, "RGB")


def _scaled(size: tuple[int, int], target: Target) -> tuple[int, int] | None:
    """The size ``target``'s resize gives before any crop or border; None when it keeps the image as is."""
    if target.mode == "no":
        return None
    width, height = size
    side = min(size) if target.mode in ("keep_ratio", "center_crop") else max(size)
    if target.only_if_bigger and side <= target.size:
        return None
    scale = target.size / side
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit(image: Image.Image, scaled: tuple[int, int] | None, target: Target) -> Image.Image:
    """Resize to ``scaled`` (see ``_scaled``), then crop or border as img2dataset's modes do: only when resized."""
    if scaled is None:
        return image
    image = image.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
    left, top = (scaled[0] - target.size) // 2, (scaled[1] - target.size) // 2
    if target.mode == "center_crop":
        return image.crop((left, top, left + target.size, top + target.size))
    if target.mode == "border":
        canvas = Image.new("RGB", (target.size, target.size), (WHITE,) * 3)
        canvas.paste(image, (-left, -top))
        return canvas
    return image


def encode(image: Image.Image, quality: int) -> bytes:
    image = image.convert("RGB")
    image.info = {}  # some encoders write what info holds (comments): the stored file carries pixels only
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


class Normaliser:
    """img2dataset's resizer interface: ``(stream) -> (jpeg, width, height, original_width, original_height, error)``.

    Errors are ``"<reason>: <message>"`` (``fetch.fate`` reads the reason back); nothing is
    raised, as img2dataset would otherwise drop the sample without a row. The jpeg is an
    ``embedded.Stored`` carrying, as JSON, the rights metadata the original embeds and the
    TDMRep headers it was served with (``curate.rights.download`` puts them on the stream),
    since only here are the original bytes still at hand.
    """

    def __init__(self, target: Target):
        self.target = target

    def __call__(self, img_stream, blurring_bbox_list=None):
        img_stream.seek(0)
        data = img_stream.read()
        found = {}
        try:
            jpeg, original, stored = normalise(data, self.target,
                                               lambda image: found.update(embedded.scan(image, data)))
        except PixelError as e:
            return None, None, None, None, None, f"{e.reason}: {e}"
        except Exception as e:  # noqa: BLE001  a bug here must still leave the sample a row
            return None, None, None, None, None, f"{DECODE_ERROR}: {type(e).__name__}: {e}"
        headers = getattr(img_stream, "headers", None)
        if headers:
            found["headers"] = dict(headers)
        result = embedded.Stored(jpeg)
        result.rights = json.dumps(found, ensure_ascii=False, sort_keys=True) if found else None
        return result, *stored, *original, None
