"""Untrusted image bytes: limits, sniffing, bombs, and the clean copy without EXIF."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import pytest
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo

from curate.optin import safety
from curate.optin.errors import Busy, UploadRefused
from curate.optin.options import Limits

from .conftest import picture

LIMITS = Limits()


def refused(data: bytes, limits: Limits = LIMITS) -> UploadRefused:
    with pytest.raises(UploadRefused) as caught:
        safety.clean(data, limits)
    return caught.value


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims width x height grey pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + chunk(b"IEND", b""))


def test_oversized_upload_is_refused_before_decoding():
    data = picture(1)
    assert refused(data, Limits(max_bytes=len(data) - 1)).code == "too_large"
    assert safety.clean(data, Limits(max_bytes=len(data))).format == "JPEG"


@pytest.mark.parametrize("width, height, said", [
    (10_000, 5_000, "10000x5000"),  # 50 MP: above our 40 MP limit, below Pillow's own warning
    (30_000, 30_000, "decompression bomb"),  # 900 MP: Pillow's guard refuses while opening
])
def test_decompression_bomb_is_refused_from_its_header(width, height, said):
    bomb = png_claiming(width, height)
    assert len(bomb) < 1024  # megapixels in under a kilobyte
    error = refused(bomb)
    assert error.code == "too_many_pixels" and said in str(error)


def test_pixel_limit_is_ours_to_set():
    data = picture(2, 64, 48)
    assert refused(data, Limits(max_pixels=64 * 48 - 1)).code == "too_many_pixels"
    assert safety.clean(data, Limits(max_pixels=64 * 48)).width == 64


def test_pillows_own_bomb_guard_also_refuses(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # below our limit: Pillow's guard speaks first
    assert refused(picture(3, 64, 48)).code == "too_many_pixels"


@pytest.mark.parametrize("data, looks_like", [
    (b"<!doctype html><html><script>alert(1)</script></html>", "markup"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "markup"),
    (b"#!/bin/sh\nrm -rf /\n", "script"),
    (b"GIF89a\x01\x00\x01\x00", "starts with"),
    (b"", "starts with nothing"),
])
def test_type_is_sniffed_from_bytes_and_non_images_are_refused(data, looks_like):
    error = refused(data)
    assert error.code == "not_an_image" and looks_like in str(error)


def test_png_and_webp_are_kept_in_their_format():
    for fmt, media_type in (("PNG", "image/png"), ("WEBP", "image/webp")):
        clean = safety.clean(picture(4, fmt=fmt), LIMITS)
        assert (clean.format, clean.media_type) == (fmt, media_type)
        assert clean.file_name == f"{clean.sha256}.{fmt.lower()}"
        assert Image.open(io.BytesIO(clean.data)).format == fmt


def test_a_jpeg_header_on_other_bytes_is_a_decode_error():
    assert refused(b"\xff\xd8\xff\xe0" + b"<html>" * 50).code == "decode_error"
    assert refused(picture(5)[:300]).code == "decode_error"  # truncated


def test_animations_are_refused():
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    assert refused(buffer.getvalue()).code == "animated"


def photo_with_location() -> bytes:
    """40x20, left half red, right half blue; EXIF says rotate 90 degrees clockwise, and where it was shot."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "PhoneMaker"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif, comment=b"taken at home",
               xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>52,31N</exif:GPSLatitude></x:xmpmeta>')
    return buffer.getvalue()


def test_orientation_is_applied_then_every_exif_and_gps_trace_is_gone():
    original = photo_with_location()
    source = Image.open(io.BytesIO(original))
    assert source.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the input really carries a location
    clean = safety.clean(original, LIMITS)
    stored = Image.open(io.BytesIO(clean.data))
    assert (clean.width, clean.height) == stored.size == (20, 40)  # rotated upright
    rgb = stored.convert("RGB")
    red, blue = rgb.getpixel((10, 5)), rgb.getpixel((10, 35))
    assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60  # the left half is now on top
    assert len(stored.getexif()) == 0 and not stored.info.get("exif") and not stored.info.get("xmp")
    for trace in (b"Exif", b"GPS", b"PhoneMaker", b"taken at home", b"xmpmeta"):
        assert trace not in clean.data


def test_png_text_chunks_are_dropped():
    image = Image.new("RGB", (8, 8), "green")
    info = PngInfo()
    info.add_text("Location", "52.5N 13.4E")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    clean = safety.clean(buffer.getvalue(), LIMITS)
    assert b"Location" not in clean.data and b"52.5N" not in clean.data


def test_decodes_share_a_pixel_budget_and_wait_for_room_or_are_told_busy():
    budget = safety.PixelBudget(100, wait_s=0.05)
    with budget.hold(80):
        with budget.hold(20):  # fits beside it
            pass
        with pytest.raises(Busy, match="try again"):
            with budget.hold(50):
                pass
    with budget.hold(10**9):  # bigger than the budget: takes all of it, once it is free
        with pytest.raises(Busy):
            with budget.hold(1):
                pass
    waiting, decoded = safety.PixelBudget(100, wait_s=30), threading.Event()

    def second_decode() -> None:
        with waiting.hold(100):
            decoded.set()

    with waiting.hold(100):
        later = threading.Thread(target=second_decode)
        later.start()
        assert not decoded.wait(0.2)  # no room while the first decode runs
    later.join(30)
    assert decoded.is_set()  # it waited, and ran once there was room
    assert safety.clean(picture(1, 64, 48), LIMITS, safety.PixelBudget(100, wait_s=1)).width == 64
