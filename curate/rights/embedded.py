"""Rights metadata embedded in an original image: what fetch keeps of it for the rights checks.

Read from the image Pillow opened (and loaded) for ``curate.pixels``, plus the raw bytes
for the boxes Pillow skips, before the image is re-encoded from its pixels alone:

- XMP packets (JPEG APP1, PNG iTXt ``XML:com.adobe.xmp``, WebP ``XMP``, TIFF tag 700):
  ``plus:DataMining``, ``Iptc4xmpExt:DigitalSourceType``, ``dc:rights``,
  ``xmpRights:WebStatement`` and ``xmpRights:Marked``;
- IPTC IIM (JPEG APP13, TIFF): the copyright notice (2:116);
- what image generators write: PNG text chunks (AUTOMATIC1111's ``parameters``, ComfyUI's
  ``prompt`` and ``workflow``, NovelAI's ``Comment``) and AUTOMATIC1111's EXIF UserComment
  in its JPEG and WebP files;
- C2PA manifest stores (JUMBF in JPEG APP11, PNG ``caBX``, WebP ``C2PA``): the actions of
  their ``c2pa.actions`` assertions (read with cbor2 from every manifest of the store), and
  what the C2PA SDK (c2pa-python's ``Reader``) says of the active manifest's claim signature,
  certificate and hash bindings: ``valid`` (no trust list is configured, so a valid signer
  is not a trusted one), ``invalid`` (with the failing checks' codes), or ``not verifiable``
  (no claim or signature, a store the SDK cannot read). A manifest is taken as what it says
  either way, which only ever rejects an image, never admits one: the verification is
  evidence, not a condition.

``scan`` returns a JSON-able dict of what it found (empty when nothing): the ``rights``
column of the fetch results, which the filters in ``curate.rights.filters`` decide from.
"""

from __future__ import annotations

import io
import json
import struct
import xml.etree.ElementTree as ET
from typing import Any, Iterator

from PIL import Image, IptcImagePlugin

COLUMN = "rights"  # of fetch results and records: the JSON ``scan`` and the TDM headers make (or null)
PLUS = "http://ns.useplus.org/ldf/xmp/1.0/"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
DC = "http://purl.org/dc/elements/1.1/"
XMP_RIGHTS = "http://ns.adobe.com/xap/1.0/rights/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# XMP property (Clark name) -> the key it is kept under.
XMP_PROPERTIES = {
    f"{{{PLUS}}}DataMining": "data_mining",
    f"{{{IPTC_EXT}}}DigitalSourceType": "digital_source_type",
    f"{{{DC}}}rights": "rights",
    f"{{{XMP_RIGHTS}}}WebStatement": "web_statement",
    f"{{{XMP_RIGHTS}}}Marked": "marked",
}
COPYRIGHT_NOTICE = (2, 116)  # IPTC IIM dataset
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
MAX_XMP_BYTES = 4 << 20
MAX_TEXT_SHOWN = 200
C2PA_MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
SIGNATURE_VALID, SIGNATURE_INVALID, NOT_VERIFIABLE = "valid", "invalid", "not verifiable"
UNTRUSTED = "signingCredential.untrusted"  # the SDK's code for a signer no configured trust list names
_JUMBF_DEPTH = 8


class Stored(bytes):
    """The stored JPEG ``curate.pixels.Normaliser`` hands img2dataset, carrying ``rights`` (JSON or None)
    to the writer of img2dataset's output (``curate.rights.download``), which keeps it in a column."""

    rights: str | None = None


def scan(image: Image.Image, data: bytes) -> dict[str, Any]:
    """What ``image`` (opened from ``data`` and loaded) embeds about its rights and origin."""
    found: dict[str, Any] = {}
    xmp = _xmp(image)
    if xmp:
        found["xmp"] = xmp
    notice = _copyright_notice(image)
    if notice:
        found["iptc"] = {"copyright_notice": notice}
    generators = generator_chunks(getattr(image, "text", None) or {}) if image.format == "PNG" else []
    generators += _generator_exif(image)
    if generators:
        found["generator"] = generators
    actions = c2pa_actions(image, data)
    if actions is not None:
        found["c2pa"] = {"actions": actions, **c2pa_signature(image.format, data)}
    return found


# ---------------------------------------------------------------- XMP


def _xmp(image: Image.Image) -> dict[str, list[str]]:
    packet = image.info.get("xmp")
    if packet is None and image.format == "TIFF":
        packet = getattr(image, "tag_v2", {}).get(700)
    if not packet:
        return {}
    return xmp_properties(packet if isinstance(packet, bytes) else str(packet).encode())


def xmp_properties(packet: bytes) -> dict[str, list[str]]:
    """The rights properties of an XMP packet, each as the list of its values; {} for an unreadable packet."""
    packet = packet[:MAX_XMP_BYTES].strip(b"\x00 \r\n\t")
    start = packet.find(b"<x:xmpmeta")
    end = packet.rfind(b"</x:xmpmeta>")
    if start >= 0 and end > start:  # the xpacket wrapper and its padding are not part of the document
        packet = packet[start:end + len(b"</x:xmpmeta>")]
    try:
        root = ET.fromstring(packet)  # expat resolves no external entities and limits entity expansion
    except ET.ParseError:
        return {}
    found: dict[str, list[str]] = {}
    for element in root.iter():
        for name, value in element.attrib.items():  # the attribute form: <rdf:Description plus:DataMining="...">
            if name in XMP_PROPERTIES and value.strip():
                found.setdefault(XMP_PROPERTIES[name], []).append(value.strip())
        if element.tag in XMP_PROPERTIES:
            values = _values(element)
            if values:
                found.setdefault(XMP_PROPERTIES[element.tag], []).extend(values)
    return found


def _values(element: ET.Element) -> list[str]:
    """A property's values: its text, an rdf:resource, or the items of its rdf:Alt/Bag/Seq."""
    resource = element.get(f"{{{RDF}}}resource")
    if resource:
        return [resource.strip()]
    items = [(item.get(f"{{{RDF}}}resource") or item.text or "").strip() for item in element.iter(f"{{{RDF}}}li")]
    if items:
        return [item for item in items if item]
    text = (element.text or "").strip()
    return [text] if text else []


# ---------------------------------------------------------------- IPTC IIM


def _copyright_notice(image: Image.Image) -> str | None:
    if image.format not in ("JPEG", "MPO", "TIFF"):
        return None
    try:
        iptc = IptcImagePlugin.getiptcinfo(image) or {}
    except Exception:  # noqa: BLE001  a corrupt APP13 block says nothing we can use
        return None
    value = iptc.get(COPYRIGHT_NOTICE)
    if isinstance(value, list):
        value = b"; ".join(value)
    return (value.decode("utf-8", "replace").strip() or None) if value else None


# ---------------------------------------------------------------- generator text chunks


def generator_chunks(text: dict[str, str]) -> list[dict[str, str]]:
    """The PNG text chunks that name the generator which wrote them (only in the shapes each writes)."""
    found = []
    parameters = text.get("parameters")
    if isinstance(parameters, str) and "Steps: " in parameters:  # "prompt\nNegative prompt: ...\nSteps: 20, ..."
        found.append(_chunk("parameters", "AUTOMATIC1111 Stable Diffusion web UI", parameters))
    prompt = _json(text.get("prompt"))
    if isinstance(prompt, dict) and any(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
        found.append(_chunk("prompt", "ComfyUI", text["prompt"]))
    workflow = _json(text.get("workflow"))
    if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list):
        found.append(_chunk("workflow", "ComfyUI", text["workflow"]))
    comment = _json(text.get("Comment"))
    novelai = isinstance(comment, dict) and {"prompt", "steps", "sampler"} <= comment.keys()
    if novelai or text.get("Software") == "NovelAI":
        found.append(_chunk("Comment", "NovelAI", str(text.get("Comment") or text.get("Software"))))
    return found


def _chunk(key: str, generator: str, value: str, where: str = "PNG text chunk") -> dict[str, str]:
    return {"where": f"{where} {key!r}", "generator": generator, "text": value[:MAX_TEXT_SHOWN]}


def _generator_exif(image: Image.Image) -> list[dict[str, str]]:
    """AUTOMATIC1111 saves a JPEG's or WebP's parameters as the EXIF UserComment (piexif's encoding)."""
    if image.format not in ("JPEG", "MPO", "WEBP"):
        return []
    try:
        comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # noqa: BLE001  unreadable EXIF says nothing
        return []
    text = _user_comment(comment) if isinstance(comment, bytes) else comment
    if isinstance(text, str) and "Steps: " in text:
        return [_chunk("UserComment", "AUTOMATIC1111 Stable Diffusion web UI", text, where="EXIF")]
    return []


def _user_comment(value: bytes) -> str:
    """An EXIF UserComment: an 8-byte character code, then the text."""
    code, text = value[:8], value[8:]
    if code == b"UNICODE\x00":  # piexif writes UTF-16 big-endian; some writers little-endian with a BOM
        return text.decode("utf-16" if text[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-be", "replace")
    return text.decode("utf-8", "replace")


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


# ---------------------------------------------------------------- C2PA (JUMBF)


def c2pa_actions(image: Image.Image, data: bytes) -> list[dict[str, Any]] | None:
    """The actions of every ``c2pa.actions`` assertion of the image's C2PA manifest store; None without one."""
    store = _jumbf(image, data)
    if store is None:
        return None
    actions: list[dict[str, Any]] = []
    for label, boxes in _superboxes(store, 0):
        if label.split("__")[0] in ("c2pa.actions", "c2pa.actions.v2"):
            actions.extend(_actions(boxes))
    return actions


def c2pa_signature(image_format: str, data: bytes) -> dict[str, str]:
    """The C2PA SDK's verdict on the file's active manifest: ``signature`` (valid, invalid or not
    verifiable) and ``validation``, what it found in words (the failing checks' codes)."""
    import c2pa

    try:
        reader = c2pa.Reader(C2PA_MEDIA_TYPES[image_format], io.BytesIO(data))
        try:
            state, results = reader.get_validation_state(), reader.get_validation_results() or {}
        finally:
            reader.close()
    except Exception as e:  # noqa: BLE001  no claim, no signature, a store the SDK cannot parse
        return {"signature": NOT_VERIFIABLE, "validation": f"{type(e).__name__}: {e}"[:MAX_TEXT_SHOWN]}
    failed = [f.get("code", "?") for f in (results.get("activeManifest") or {}).get("failure", [])]
    if state == "Trusted":
        return {"signature": SIGNATURE_VALID, "validation": "signer on a configured trust list"}
    if state == "Valid":
        return {"signature": SIGNATURE_VALID, "validation": ("signer not on a trust list" if UNTRUSTED in failed
                                                             else "signer not checked against a trust list")}
    problems = [code for code in failed if code != UNTRUSTED]
    return {"signature": SIGNATURE_INVALID, "validation": ", ".join(problems) or f"validation state {state}"}


def _jumbf(image: Image.Image, data: bytes) -> bytes | None:
    if image.format in ("JPEG", "MPO"):
        return _app11(getattr(image, "applist", []))
    if image.format == "PNG":
        return next((body for kind, body in _png_chunks(data) if kind == b"caBX"), None)
    if image.format == "WEBP":
        return next((body for kind, body in _riff_chunks(data) if kind == b"C2PA"), None)
    return None


def _app11(applist: list[tuple[str, bytes]]) -> bytes | None:
    """JPEG XT boxes split over APP11 segments ("JP", box instance, sequence number, box), joined again;
    segments after the first repeat the box's 8-byte header."""
    parts: dict[int, list[tuple[int, bytes]]] = {}
    for marker, body in applist:
        if marker == "APP11" and body[:2] == b"JP" and len(body) >= 16:
            instance, sequence = struct.unpack(">HI", body[2:8])
            parts.setdefault(instance, []).append((sequence, body[8:]))
    for segments in parts.values():
        segments.sort()
        joined = segments[0][1] + b"".join(s[8:] for _, s in segments[1:])
        if joined[4:8] == b"jumb":
            return joined
    return None


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """After the signature: length (big-endian), type, data, CRC."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """After "RIFF", the size and "WEBP": type, length (little-endian), data, a pad byte to even length."""
    pos = 12
    while pos + 8 <= len(data):
        kind, length = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 8 + length + length % 2


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """ISO BMFF boxes: (type, payload)."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1 and pos + 16 <= len(data):
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        if size < head:
            return
        yield kind, data[pos + head:pos + size]
        pos += size


def _superboxes(data: bytes, depth: int) -> Iterator[tuple[str, list[tuple[bytes, bytes]]]]:
    """Every JUMBF superbox (``jumb``) in ``data``, at any depth: (label, its child boxes after ``jumd``)."""
    if depth > _JUMBF_DEPTH:
        return
    for kind, payload in _boxes(data):
        if kind != b"jumb":
            continue
        children = list(_boxes(payload))
        if children and children[0][0] == b"jumd":
            yield _label(children[0][1]), children[1:]
        yield from _superboxes(payload, depth + 1)


def _label(description: bytes) -> str:
    """A ``jumd`` box: 16-byte content type, toggles, then the label (null-terminated) when toggle 0x02 is set."""
    if len(description) < 17 or not description[16] & 0x02:
        return ""
    return description[17:].split(b"\x00", 1)[0].decode("utf-8", "replace")


def _actions(boxes: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    import cbor2

    for kind, payload in boxes:
        if kind != b"cbor":
            continue
        try:
            content = cbor2.loads(payload)
        except Exception:  # noqa: BLE001  a corrupt assertion says nothing
            return []
        listed = content.get("actions") if isinstance(content, dict) else None
        return [{k: str(a[k]) for k in ("action", "digitalSourceType") if k in a}
                for a in listed or [] if isinstance(a, dict)]
    return []
