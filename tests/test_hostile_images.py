"""Hostile and unusual originals through the real fetch (loopback server): the shard image looks like the original.

Each case is an image a user would see wrong (sideways, white, black, inverted colours)
or a file that must be refused with a reason rather than crash, hang or pass as a
download error.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageCms

from curate import dedup, fetch, pixels, records, shards, stages, stats
from curate.localserve import serve
from curate.score import images, watermark

SETTINGS = fetch.FetchSettings(processes_count=1, thread_count=4, timeout=5, image_size=128, max_pixels=200_000)
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
GPS_IFD, ORIENTATION = 0x8825, 0x0112


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def upright() -> Image.Image:
    """300x200, blue with a red top-left corner: any rotation or flip moves the corner."""
    image = Image.new("RGB", (300, 200), BLUE)
    image.paste(RED, (0, 0, 60, 60))
    return image


def rotated_with_gps() -> bytes:
    """The upright image stored turned a quarter left, with EXIF orientation 6 (turn right to view) and GPS."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    return encoded(upright().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


def swapped_primaries_profile() -> bytes:
    """sRGB with its red and blue primaries exchanged: pixels tagged with it that say "red" mean sRGB blue."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack(">I", data[128:132])
    entries = {data[132 + 12 * i:136 + 12 * i].decode(): 132 + 12 * i for i in range(count)}
    red, blue = entries["rXYZ"], entries["bXYZ"]
    data[red + 4:red + 12], data[blue + 4:blue + 12] = data[blue + 4:blue + 12], data[red + 4:red + 12]
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming width x height pixels, with a few bytes of data: a decompression bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 20), 0)  # index 0, transparent, on the right
    image.putpalette([*RED, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 20, 20))  # index 1, green, on the left
    return encoded(image, "PNG", transparency=0)


def rgba() -> bytes:
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # fully transparent right half
    image.paste((255, 0, 0, 128), (0, 0, 20, 20))  # half-transparent red left half
    return encoded(image, "PNG")


FILES = {
    "rotated.jpg": rotated_with_gps(),
    "grey16.png": encoded(Image.fromarray(np.full((20, 30), 30000, np.uint16)), "PNG"),
    "grey.png": encoded(Image.new("L", (30, 20), 80), "PNG"),
    "cmyk.jpg": encoded(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG", quality=95),
    "tagged.png": encoded(Image.new("RGB", (30, 20), RED), "PNG", icc_profile=swapped_primaries_profile()),
    "palette.png": palette_with_transparency(),
    "rgba.png": rgba(),
    "empty.jpg": b"",
    "postscript.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",  # Pillow would run Ghostscript
    "bomb.png": png_claiming(40_000, 40_000),
    "big.png": encoded(Image.new("RGB", (600, 400), RED), "PNG"),  # 240000 pixels > max_pixels
    "truncated.jpg": encoded(Image.effect_noise((200, 150), 60).convert("RGB"), "JPEG")[:1500],
    "truncated.png": encoded(Image.effect_noise((200, 150), 60).convert("RGB"), "PNG")[:3000],
}


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    site, out = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("fetch")
    for name, data in FILES.items():
        (site / name).write_bytes(data)
    keys = [name.replace(".", "-") for name in FILES]
    with serve(site) as base_url:
        fetch.download(pa.table({"key": keys, "url": [base_url + name for name in FILES]}), out, SETTINGS)
    return out, {r["key"]: r for r in fetch.results(out).to_pylist()}


def stored(fetched, key: str) -> Image.Image:
    out, _ = fetched
    return Image.open(io.BytesIO(fetch.read_images(out, [key])[key]))


def near(pixel, colour, tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def test_an_exif_rotated_photo_lands_upright_in_the_shard_without_its_gps(fetched, tmp_path):
    out, results = fetched
    result = results["rotated-jpg"]
    assert (result["status"], result["original_width"], result["original_height"]) == ("pending", 300, 200)
    assert result["sha256"] == hashlib.sha256(FILES["rotated.jpg"]).hexdigest()  # of the original, EXIF and all
    row = {**records.candidate("met", "rotated", license="CC0-1.0"), "key": "rotated-jpg"}
    row = fetch.ApplyFetch()(fetch.attach_results(records.to_table([row]), fetch.results(out))).to_pylist()[0]
    shards.write_shard(tmp_path, "shard-00000", [row], fetch.read_located(out.parent, [row]))

    with tarfile.open(tmp_path / "shard-00000.tar") as tar:
        data = tar.extractfile("rotated-jpg.jpg").read()
        meta = json.loads(tar.extractfile("rotated-jpg.json").read())
    image = Image.open(io.BytesIO(data))
    assert image.size == (192, 128)  # landscape, like the upright original, short side to image_size
    assert near(image.getpixel((5, 5)), RED) and near(image.getpixel((186, 122)), BLUE)
    assert near(image.getpixel((186, 5)), BLUE) and near(image.getpixel((5, 122)), BLUE)
    assert len(image.getexif()) == 0 and not image.getexif().get_ifd(GPS_IFD)  # no EXIF at all, GPS included
    assert Image.open(io.BytesIO(FILES["rotated.jpg"])).getexif().get_ifd(GPS_IFD)  # the original had it
    sizes = {k: meta[k] for k in ("original_width", "original_height", "stored_width", "stored_height")}
    assert sizes == {"original_width": 300, "original_height": 200, "stored_width": 192, "stored_height": 128}
    samples = pq.read_table(tmp_path / "shard-00000.parquet").to_pylist()
    assert {k: samples[0][k] for k in sizes} == sizes


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped_to_white(fetched):
    image = stored(fetched, "grey16-png")
    assert image.mode == "RGB" and image.size == (30, 20)
    assert near(image.getpixel((10, 10)), (117,) * 3, tolerance=1)  # 30000 / 65535 * 255 = 116.7


def test_grey_stays_the_same_grey(fetched):
    assert near(stored(fetched, "grey-png").getpixel((10, 10)), (80,) * 3, tolerance=1)


def test_cmyk_becomes_the_rgb_it_shows(fetched):
    assert near(stored(fetched, "cmyk-jpg").getpixel((10, 10)), RED)  # no cyan, no black: red, not inverted


def test_an_icc_profile_is_converted_to_srgb(fetched):
    # The file says "full first channel"; its profile says the first channel is sRGB's blue.
    image = stored(fetched, "tagged-png")
    assert near(image.getpixel((10, 10)), BLUE, tolerance=12) and "icc_profile" not in image.info


def test_palette_transparency_is_white_and_the_palette_colours_stay(fetched):
    image = stored(fetched, "palette-png")
    assert near(image.getpixel((5, 10)), (0, 255, 0)) and near(image.getpixel((35, 10)), WHITE)


def test_alpha_is_composited_over_white(fetched):
    image = stored(fetched, "rgba-png")
    assert near(image.getpixel((5, 10)), (255, 127, 127)) and near(image.getpixel((35, 10)), WHITE)


def test_an_empty_file_is_a_decode_error_with_the_decoders_message(fetched):
    out, results = fetched
    result = results["empty-jpg"]
    assert (result["status"], result["reason"]) == ("failed", "decode_error")
    assert result["detail"] == ("decode_error: cannot identify image file (0 bytes, starting with nothing) as "
                                f"{', '.join(pixels.FORMATS)}")
    with pytest.raises(KeyError, match="empty-jpg"):
        fetch.read_images(out, ["empty-jpg"])


def test_a_format_outside_the_accepted_ones_is_a_decode_error(fetched):
    _, results = fetched
    result = results["postscript-jpg"]
    assert (result["status"], result["reason"]) == ("failed", "decode_error")
    assert result["detail"].startswith(
        "decode_error: cannot identify image file (58 bytes, starting 252150532d41646f) as ")


def test_a_decompression_bomb_is_refused_from_its_header(fetched):
    out, results = fetched
    result = results["bomb-png"]
    assert (result["status"], result["reason"]) == ("rejected", "too_many_pixels")
    assert "decompression bomb" in result["detail"] and "1600000000 pixels" in result["detail"]
    assert stages.stage_of(result["status"], result["reason"]) == "fetch"
    with pytest.raises(KeyError, match="bomb-png"):
        fetch.read_images(out, ["bomb-png"])


def test_more_pixels_than_max_pixels_is_refused_with_the_numbers(fetched):
    _, results = fetched
    result = results["big-png"]
    assert (result["status"], result["reason"]) == ("rejected", "too_many_pixels")
    assert result["detail"] == ("too_many_pixels: the image claims 600x400 = 240000 pixels; "
                                "the limit is max_pixels=200000")


@pytest.mark.parametrize("key", ["truncated-jpg", "truncated-png"])
def test_a_truncated_image_is_a_decode_error_not_a_grey_picture(fetched, key):
    out, results = fetched
    assert (results[key]["status"], results[key]["reason"]) == ("failed", "decode_error")
    assert results[key]["detail"].startswith(("decode_error: OSError: ", "decode_error: SyntaxError: "))
    with pytest.raises(KeyError):
        fetch.read_images(out, [key])


# ---------------------------------------------------------------- after fetch: one error policy


def batch_with_a_bad_image() -> pa.Table:
    """Two pending records with a ``jpg`` column: a good stored image and bytes that do not decode."""
    rows = [records.candidate("met", name, license="CC0-1.0") for name in ("good", "bad")]
    jpegs = [encoded(upright(), "JPEG"), FILES["truncated.jpg"]]
    return records.to_table(rows).append_column("jpg", pa.array(jpegs, pa.binary()))


def test_every_score_stage_fails_the_record_it_cannot_decode_and_goes_on(tmp_path):
    watermark.save_random(tmp_path / "watermark.pt")
    image_stages = {"perceptual hash": (dedup.add_phash, dedup.PHASH),
              f"watermark detector laion-watermark-efficientnet_b3:{tmp_path / 'watermark.pt'}": (
                  watermark.Watermark(watermark.WatermarkConfig(weights=str(tmp_path / "watermark.pt"))),
                  watermark.SCORE)}
    for what, (stage, column) in image_stages.items():
        good, bad = stage(batch_with_a_bad_image()).to_pylist()
        assert good["status"] == "pending" and good[column] is not None, what
        fate = (bad["status"], bad["reason"], bad["stage"], bad[column])
        assert fate == ("failed", "decode_error", "score", None), what
        assert bad["detail"].startswith(f"score: {what}: record {bad['key']}: cannot decode its stored image "
                                        "(OSError: "), bad["detail"]


def test_a_decode_failure_after_fetch_counts_in_the_stage_that_met_it(tmp_path):
    error = pixels.PixelError("decode_error", "OSError: image file is truncated")
    rows = [records.finish(records.candidate("met", stage), records.FAILED, "decode_error",
                           images.failed_decode(stage, "a model", "met-x", error), stage=stage)
            for stage in ("score", "caption")]
    rows.append(records.finish(records.candidate("met", "fetched"), records.FAILED, "decode_error",
                               "decode_error: cannot identify image file (0 bytes, starting with nothing)",
                               stage="fetch"))
    (tmp_path / "records").mkdir()
    pq.write_table(records.to_table(rows), tmp_path / "records" / "records.parquet")
    order = stages.run_order(["resolution"])
    by_stage = stats.compute(tmp_path / "records", order)["by_stage"]
    removed = {stage: counts["removed"] for stage, counts in by_stage.items() if stage != "shards"}
    assert removed == {**{stage: 0 for stage in removed}, "score": 1, "caption": 1, "fetch": 1}
