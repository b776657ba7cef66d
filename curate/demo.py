"""The offline demo corpus: made on this machine, served on loopback, in real source formats.

It holds records in the Met's and Wikimedia Commons' API formats and a local folder, so
the demo runs the real adapters, and the cases a curation run must handle: licenses the
policy rejects (CC BY-SA, "no restrictions", an unrecognised string), a server that
answers ``X-Robots-Tag: noai``, records without an image, a malformed line, a missing
file (404), HTML saved as .jpg, a truncated JPEG, a too-small and a too-elongated image,
the same bytes offered by two sources, a half-size copy (a perceptual duplicate) and a 90%
crop (a CLIP-embedding duplicate), a title and creator full of template syntax
(``{title:>99999}``, ``[x]``) that must stay text, and an image for each rights check: one
robots.txt disallows, one the host's tdmrep.json reserves, one served with
``tdm-reservation: 1``, one whose file page's ``<meta name="tdm-reservation">`` reserves it,
and files whose own metadata prohibits data mining, says a model
made them (IPTC digital source type, C2PA, an AUTOMATIC1111 PNG) or claims a copyright the
record's CC0 denies, beside a camera's file whose harmless metadata keeps it.

The scoring heads of the demo (aesthetic, watermark, NSFW) are random-initialised files
in the real formats, written into ``OUT/demo-models``: their scores mean nothing.

The corpus and the port it is served on are made once per output folder and kept there,
so a resumed run sees the same URLs. Each file is written atomically and each image is
seeded by its own name, so a generation killed part-way and run again writes the same
bytes an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from curate.config import Demo
from curate.io import atomic_path, write_bytes_atomic, write_text_atomic
from curate.localserve import serve
from curate.rights import marked

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


def image_seed(base: int, name: str) -> int:
    """The seed of one image: from the demo's seed and the file's name only, never from how many
    files exist, so a resumed generation draws every image as the first one did."""
    return int.from_bytes(hashlib.sha256(f"{base}/{name}".encode()).digest()[:8], "big")


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _save_model(save: Callable[..., None], path: Path, *args: Any) -> None:
    # Into an open file: torch names the archive inside after a file path, so saving by the
    # temporary path would make the bytes depend on its random name.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        save(f, *args)


def write_models(folder: Path, embed_dim: int) -> None:
    """Random heads in the real weight formats, so the demo runs the real loading code offline."""
    from curate.score import aesthetic, nsfw, watermark

    _save_model(aesthetic.save_random, folder / "aesthetic-mlp.pth", "improved_mlp", embed_dim)
    _save_model(watermark.save_random, folder / "watermark_model_v1.pt")
    _save_model(nsfw.save_random, folder / "nsfw-head.pt", embed_dim)


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


def _commons_page(page_id: int, url: str, short: str, machine: str | None, artist: str,
                  page_url: str | None = None) -> dict[str, Any]:
    ext = {"LicenseShortName": {"value": short, "source": "commons-desc-page"},
           "Artist": {"value": f'<a href="https://example.invalid/u">{artist}</a>', "source": "commons-desc-page"},
           "ObjectName": {"value": f"Demo photograph {page_id}", "source": "mediawiki-metadata"},
           "DateTimeOriginal": {"value": "1921", "source": "commons-desc-page"},
           "ImageDescription": {"value": f"<p>A demo picture number {page_id}.</p>", "source": "commons-desc-page"}}
    if machine:
        ext["License"] = {"value": machine, "source": "commons-templates"}
    return {"pageid": page_id, "ns": 6, "title": f"File:Demo {page_id}.jpg",
            "imageinfo": [{"url": url,
                           "descriptionurl": page_url or f"https://example.invalid/wiki/File:Demo_{page_id}.jpg",
                           "width": 320, "height": 256, "extmetadata": ext}]}


def _write_lines(path: Path, lines: list[str]) -> None:
    write_text_atomic("\n".join(lines) + "\n", path)


class _Files:
    """The served ``files/`` folder: each image drawn from its own seed, written by rename."""

    def __init__(self, corpus: Path, base_url: str, seed: int):
        self.folder, self.base_url, self.seed = corpus / "files", base_url, seed

    def add(self, name: str, width: int = 320, height: int = 256, same_as: str | None = None) -> str:
        data = (self.folder / same_as).read_bytes() if same_as else picture(image_seed(self.seed, name), width, height)
        write_bytes_atomic(data, self.folder / name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base_url}files/{name}"


def _met(files: _Files, per_source: int) -> list[str]:
    met = [_met_object(i, files.add(f"met-{i}.jpg", 320 + 16 * i, 256), True) for i in range(1, per_source + 1)]
    met[0]["additionalImages"] = [files.add("met-1-b.jpg", 300, 400)]
    met += [_met_object(901, "", False),  # not public domain: the Met gives no image
            _met_object(902, files.url("met-missing.jpg"), True),  # 404
            _met_object(903, files.add("met-small.jpg", 96, 96), True),
            _met_object(904, files.add("met-banner.jpg", 960, 160), True)]
    return [json.dumps(o) for o in met] + ['{"objectID": 905, "title": "cut off']


def _commons(files: _Files, per_source: int) -> list[str]:
    pages = [_commons_page(100 + i, files.add(f"commons-{i}.jpg", 320, 240 + 8 * i), *lic)
             for i, lic in enumerate([("CC0", "cc0", "Demo Photographer"), ("Public domain", "pd", "Demo Photographer")]
                                     * (per_source // 2), start=1)]
    # The server sends X-Robots-Tag: noai for 207: the site opts out of AI use.
    optout = files.add("commons-optout.jpg").rsplit("/", 1)[1]
    pages += [
        _commons_page(201, files.add("commons-bysa.jpg"), "CC BY-SA 4.0", "cc-by-sa-4.0", "A. Photographer"),
        _commons_page(202, files.add("commons-nkc.jpg"), "No restrictions", None, "Archive"),
        _commons_page(203, files.add("commons-odd.jpg"), "Free for personal use", None, "Someone"),
        _commons_page(204, files.add("commons-dup.jpg", same_as="met-2.jpg"), "Public domain", "pd", "Demo Painter"),
        _commons_page(205, files.url("commons-html.jpg"), "CC0", "cc0", "Broken"),
        _commons_page(206, files.url("commons-truncated.jpg"), "CC0", "cc0", "Broken"),
        _commons_page(207, f"{files.base_url}noai/files/{optout}", "CC0", "cc0", "Opted Out"),
    ]
    pages += _commons_rights(files)
    write_text_atomic("<html><body>Not an image</body></html>", files.folder / "commons-html.jpg")
    write_bytes_atomic(picture(image_seed(files.seed, "commons-truncated.jpg"), 320, 256)[:2000],
                       files.folder / "commons-truncated.jpg")
    return [json.dumps(p) for p in pages]


# The demo host's opt-outs: robots.txt keeps one file from our token (and GPTBot), tdmrep.json reserves another.
_ROBOTS = """User-agent: GPTBot
User-agent: cleanroom
Disallow: /files/commons-robots.jpg

User-agent: *
Allow: /
"""
_PHOTOGRAPHER_RIGHTS = "(c) 2021 A. Photographer. All rights reserved."


def _commons_rights(files: _Files) -> list[dict[str, Any]]:
    """CC0 pages whose images a rights check refuses, and a camera's file it keeps."""
    corpus, base = files.folder.parent, files.base_url
    write_text_atomic(_ROBOTS, corpus / "robots.txt")
    write_text_atomic(json.dumps([
        {"location": "/files/commons-reserved*", "tdm-reservation": 1, "tdm-policy": f"{base}tdm-policy.json"},
        {"location": "/*", "tdm-reservation": 0}]), corpus / ".well-known" / "tdmrep.json")
    write_text_atomic(json.dumps({"permissions": [], "prohibitions": [{"action": "tdm:mine"}]}),
                      corpus / "tdm-policy.json")
    marks = {
        "commons-nomining.jpg": dict(xmp=marked.xmp_packet(data_mining=marked.DMI_PROHIBITED_AI)),
        "commons-synthetic.jpg": dict(xmp=marked.xmp_packet(digital_source_type=marked.AI_SOURCE_TYPE)),
        "commons-c2pa.jpg": dict(c2pa_actions=[{"action": "c2pa.created", "digitalSourceType": marked.AI_SOURCE_TYPE}]),
        "commons-copyright.jpg": dict(xmp=marked.xmp_packet(rights=_PHOTOGRAPHER_RIGHTS),
                                      copyright_notice=_PHOTOGRAPHER_RIGHTS),
        "commons-camera.jpg": dict(xmp=marked.xmp_packet(
            digital_source_type="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture",
            rights="Demo Photographer")),
    }
    for name, metadata in marks.items():
        plain = picture(image_seed(files.seed, name), 320, 256)
        write_bytes_atomic(marked.jpeg(plain, **metadata), files.folder / name)
    with Image.open(io.BytesIO(picture(image_seed(files.seed, "commons-generated.png"), 320, 256))) as generated:
        write_bytes_atomic(marked.png(generated, text={"parameters": "a garden\nSteps: 20, Sampler: Euler a, Seed: 1"}),
                           files.folder / "commons-generated.png")
    urls = [files.add("commons-robots.jpg"), files.add("commons-reserved.jpg"),
            f"{base}tdm/{files.add('commons-tdm-header.jpg').removeprefix(base)}",
            *(files.url(name) for name in [*marks, "commons-generated.png"])]
    pages = [_commons_page(208 + i, url, "CC0", "cc0", "Demo Photographer") for i, url in enumerate(urls)]
    # A file page whose <meta name="tdm-reservation"> reserves the work shown on it.
    write_text_atomic('<html><head><meta name="tdm-reservation" content="1">'
                      f'<meta name="tdm-policy" content="{base}tdm-policy.json"></head><body>A work</body></html>',
                      corpus / "pages" / "reserved.html")
    return [*pages, _commons_page(208 + len(urls), files.add("commons-page-reserved.jpg"), "CC0", "cc0",
                                  "Demo Photographer", page_url=f"{base}pages/reserved.html")]


def _local(local: Path, seed: int, per_source: int) -> list[str]:
    entries = []
    for i in range(1, per_source + 1):
        name = f"contribution-{i}.jpg"
        write_bytes_atomic(picture(image_seed(seed, name), 288, 288), local / name)
        entries.append({"file": name, "title": f"Garden study {i}", "creator": "Demo Contributor"})
    # Template syntax in values: an attribution or caption must show it, not interpret it.
    entries[2].update(title="Garden study 3 {title:*>50000000} {0} [x]",
                      creator="Demo Contributor {title:>99999999999999999999} {creator}")
    write_bytes_atomic((local / "contribution-1.jpg").read_bytes(), local / "contribution-copy.jpg")
    entries.append({"file": "contribution-copy.jpg", "title": "Garden study 1, sent again",
                    "creator": "Demo Contributor"})
    with Image.open(local / "contribution-2.jpg") as original:
        write_bytes_atomic(_jpeg(original.resize((144, 144), Image.BICUBIC)), local / "contribution-2-small.jpg")
        write_bytes_atomic(_jpeg(original.crop((14, 14, 274, 274))), local / "contribution-2-crop.jpg")
    entries += [{"file": "contribution-2-small.jpg", "title": "Garden study 2, small", "creator": "Demo Contributor"},
                {"file": "contribution-2-crop.jpg", "title": "Garden study 2, cropped", "creator": "Demo Contributor"}]
    write_bytes_atomic(picture(image_seed(seed, "noncommercial.jpg"), 300, 300), local / "noncommercial.jpg")
    entries.append({"file": "noncommercial.jpg", "title": "A borrowed picture", "license": "CC BY-NC 4.0"})
    return [json.dumps(e) for e in entries]


def _remove_leftovers(corpus: Path) -> None:
    """Temporary files of a generation that was killed (curate.io names them ``.NAME.*.tmp``)."""
    for tmp in corpus.rglob(".*.tmp"):
        tmp.unlink()


def generate(corpus: Path, base_url: str, settings: Demo) -> None:
    """Write images and metadata; the three sources share ``settings.images`` good images.

    Every file is written whole again, so running it over a half-written corpus completes it."""
    _remove_leftovers(corpus)
    files = _Files(corpus, base_url, settings.seed)
    per_source = settings.images // 3
    _write_lines(corpus / "met" / "objects.jsonl", _met(files, per_source))
    _write_lines(corpus / "commons" / "pages.jsonl", _commons(files, per_source))
    _write_lines(corpus / "local" / "metadata.jsonl", _local(corpus / "local", settings.seed, per_source))


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
