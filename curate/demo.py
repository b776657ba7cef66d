"""The offline demo corpus: made on this machine, served on loopback, in real source formats.

It holds records in the Met's and Wikimedia Commons' API formats and a local folder, so
the demo runs the real adapters, and the cases a curation run must handle: licenses the
policy rejects (CC BY-SA, "no restrictions", an unrecognised string), a server that
answers ``X-Robots-Tag: noai``, records without an image, a malformed line, a missing file (404), HTML saved as .jpg, a truncated JPEG,
a too-small and a too-elongated image, the same bytes offered by two sources, a
half-size copy (a perceptual duplicate) and a 90% crop (a CLIP-embedding duplicate).

The scoring heads of the demo (aesthetic, watermark, NSFW) are random-initialised files
in the real formats, written into ``OUT/demo-models``: their scores mean nothing.

The corpus and the port it is served on are made once per output folder and kept there,
so a resumed run sees the same URLs.
"""

from __future__ import annotations

import io
import json
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from curate.config import Demo
from curate.io import write_text_atomic
from curate.localserve import serve

CORPUS = "demo-corpus"
PORT_FILE = "port"
MODELS = "models"


def picture(seed: int, width: int, height: int) -> bytes:
    """A smooth random colour field: distinct per seed, compresses like a photo."""
    rng = np.random.default_rng(seed)
    small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=90)


def write_models(folder: Path, embed_dim: int) -> None:
    """Random heads in the real weight formats, so the demo runs the real loading code offline."""
    from curate.score import aesthetic, nsfw, watermark

    folder.mkdir(parents=True, exist_ok=True)
    aesthetic.save_random(folder / "aesthetic-mlp.pth", "improved_mlp", embed_dim)
    watermark.save_random(folder / "watermark_model_v1.pt")
    nsfw.save_random(folder / "nsfw-head.pt", embed_dim)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _met_object(object_id: int, image_url: str, public: bool, extra: list[str] | None = None) -> dict[str, Any]:
    return {
        "objectID": object_id, "isPublicDomain": public,
        "primaryImage": image_url if public else "", "primaryImageSmall": image_url if public else "",
        "additionalImages": extra or [], "constituents": None, "department": "Drawings and Prints",
        "objectName": "Print", "title": f"Study of Colour No. {object_id}", "culture": "",
        "artistDisplayName": "Demo Painter", "objectDate": f"{1800 + object_id % 90}", "medium": "Woodblock print",
        "classification": "Prints", "objectURL": f"https://example.invalid/met/{object_id}",
        "rightsAndReproduction": "", "tags": [],
    }


def _commons_page(page_id: int, url: str, short: str, machine: str | None, artist: str) -> dict[str, Any]:
    ext = {"LicenseShortName": {"value": short, "source": "commons-desc-page"},
           "Artist": {"value": f'<a href="https://example.invalid/u">{artist}</a>', "source": "commons-desc-page"},
           "ObjectName": {"value": f"Demo photograph {page_id}", "source": "mediawiki-metadata"},
           "DateTimeOriginal": {"value": "1921", "source": "commons-desc-page"},
           "ImageDescription": {"value": f"<p>A demo picture number {page_id}.</p>", "source": "commons-desc-page"}}
    if machine:
        ext["License"] = {"value": machine, "source": "commons-templates"}
    return {"pageid": page_id, "ns": 6, "title": f"File:Demo {page_id}.jpg",
            "imageinfo": [{"url": url, "descriptionurl": f"https://example.invalid/wiki/File:Demo_{page_id}.jpg",
                           "width": 320, "height": 256, "extmetadata": ext}]}


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic("\n".join(lines) + "\n", path)


def generate(corpus: Path, base_url: str, settings: Demo) -> None:
    """Write images and metadata; the three sources share ``settings.images`` good images."""
    files = corpus / "files"
    files.mkdir(parents=True, exist_ok=True)
    per_source = settings.images // 3
    seed = settings.seed * 1000

    def image(name: str, width: int = 320, height: int = 256, same_as: str | None = None) -> str:
        data = (files / same_as).read_bytes() if same_as else picture(seed + len(list(files.iterdir())), width, height)
        (files / name).write_bytes(data)
        return f"{base_url}files/{name}"

    met = [_met_object(i, image(f"met-{i}.jpg", 320 + 16 * i, 256), True) for i in range(1, per_source + 1)]
    met[0]["additionalImages"] = [image("met-1-b.jpg", 300, 400)]
    met += [_met_object(901, "", False),  # not public domain: the Met gives no image
            _met_object(902, f"{base_url}files/met-missing.jpg", True),  # 404
            _met_object(903, image("met-small.jpg", 96, 96), True),
            _met_object(904, image("met-banner.jpg", 960, 160), True)]
    met_lines = [json.dumps(o) for o in met] + ['{"objectID": 905, "title": "cut off']
    _write_lines(corpus / "met" / "objects.jsonl", met_lines)

    pages = [_commons_page(100 + i, image(f"commons-{i}.jpg", 320, 240 + 8 * i), *lic)
             for i, lic in enumerate([("CC0", "cc0", "Demo Photographer"), ("Public domain", "pd", "Demo Photographer")]
                                     * (per_source // 2), start=1)]
    pages += [
        _commons_page(201, image("commons-bysa.jpg"), "CC BY-SA 4.0", "cc-by-sa-4.0", "A. Photographer"),
        _commons_page(202, image("commons-nkc.jpg"), "No restrictions", None, "Archive"),
        _commons_page(203, image("commons-odd.jpg"), "Free for personal use", None, "Someone"),
        _commons_page(204, image("commons-dup.jpg", same_as="met-2.jpg"), "Public domain", "pd", "Demo Painter"),
        _commons_page(205, f"{base_url}files/commons-html.jpg", "CC0", "cc0", "Broken"),
        _commons_page(206, f"{base_url}files/commons-truncated.jpg", "CC0", "cc0", "Broken"),
        # The server sends X-Robots-Tag: noai for this one: the site opts out of AI use.
        _commons_page(207, f"{base_url}noai/files/{image('commons-optout.jpg').rsplit('/', 1)[1]}", "CC0", "cc0",
                      "Opted Out"),
    ]
    (files / "commons-html.jpg").write_text("<html><body>Not an image</body></html>")
    (files / "commons-truncated.jpg").write_bytes(picture(seed + 999, 320, 256)[:2000])
    _write_lines(corpus / "commons" / "pages.jsonl", [json.dumps(p) for p in pages])

    local = corpus / "local"
    local.mkdir(exist_ok=True)
    entries = []
    for i in range(1, per_source + 1):
        (local / f"contribution-{i}.jpg").write_bytes(picture(seed + 500 + i, 288, 288))
        entries.append({"file": f"contribution-{i}.jpg", "title": f"Garden study {i}", "creator": "Demo Contributor"})
    (local / "contribution-copy.jpg").write_bytes((local / "contribution-1.jpg").read_bytes())
    entries.append({"file": "contribution-copy.jpg", "title": "Garden study 1, sent again", "creator": "Demo Contributor"})
    original = Image.open(local / "contribution-2.jpg")
    _save_jpeg(original.resize((144, 144), Image.BICUBIC), local / "contribution-2-small.jpg")
    _save_jpeg(original.crop((14, 14, 274, 274)), local / "contribution-2-crop.jpg")
    entries += [{"file": "contribution-2-small.jpg", "title": "Garden study 2, small", "creator": "Demo Contributor"},
                {"file": "contribution-2-crop.jpg", "title": "Garden study 2, cropped", "creator": "Demo Contributor"}]
    (local / "noncommercial.jpg").write_bytes(picture(seed + 777, 300, 300))
    entries.append({"file": "noncommercial.jpg", "title": "A borrowed picture", "license": "CC BY-NC 4.0"})
    _write_lines(local / "metadata.jsonl", [json.dumps(e) for e in entries])


def prepare(settings: Demo, out: Path) -> dict[str, str]:
    """Make the corpus once per output folder; returns the run variables that point at it."""
    corpus = out / CORPUS
    port_file = corpus / PORT_FILE
    if not port_file.exists():
        port = _free_port()
        generate(corpus, f"http://127.0.0.1:{port}/", settings)
        write_models(corpus / MODELS, settings.head_dim)
        write_text_atomic(str(port), port_file)  # last: its presence means the corpus is complete
    port = int(port_file.read_text())
    return {"demo": str(corpus), "demo_url": f"http://127.0.0.1:{port}/", "demo_models": str(corpus / MODELS)}


@contextmanager
def serving(settings: Demo, out: Path) -> Iterator[str]:
    corpus = out / CORPUS
    port = int((corpus / PORT_FILE).read_text())
    with serve(corpus, port=port) as url:
        yield url
