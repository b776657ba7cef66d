"""Images carrying the markers the rights checks read, in the formats real tools write them.

For the demo corpus and the tests: an XMP packet with the IPTC/PLUS/XMP rights properties,
a JPEG with it (APP1), an IPTC IIM copyright notice (APP13, Photoshop's 8BIM resource
0x0404) and a C2PA manifest store (JUMBF in APP11); a PNG with generators' text chunks.
The C2PA manifest has the store's shape (manifest store, manifest, assertion store,
``c2pa.actions.v2`` as CBOR) but no claim or signature: enough for the actions we read, and
what the C2PA SDK calls not verifiable (tests/rights/test_c2pa_signed.py signs real ones
with c2pa-python's Builder).
"""

from __future__ import annotations

import io
import struct
from typing import Mapping
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin

from curate.rights import embedded

AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
DMI_PROHIBITED_AI = "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"
# C2PA's JUMBF content types: manifest store, manifest, assertion store, CBOR assertion.
_C2PA_UUID = {kind: bytes.fromhex(kind + "00110010800000aa00389b71")
              for kind in ("63327061", "63326d61", "63326173", "63626f72")}


def xmp_packet(data_mining: str | None = None, digital_source_type: str | None = None, rights: str | None = None,
               web_statement: str | None = None, marked: bool | None = None) -> bytes:
    """An XMP packet with the given properties (PLUS, IPTC Extension, Dublin Core, XMP Rights)."""
    properties = []
    if data_mining:
        properties.append(f'<plus:DataMining rdf:resource="{escape(data_mining)}"/>')
    if digital_source_type:
        properties.append(f"<Iptc4xmpExt:DigitalSourceType>{escape(digital_source_type)}</Iptc4xmpExt:DigitalSourceType>")
    if rights:
        properties.append(f'<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">{escape(rights)}</rdf:li></rdf:Alt>'
                          "</dc:rights>")
    if web_statement:
        properties.append(f"<xmpRights:WebStatement>{escape(web_statement)}</xmpRights:WebStatement>")
    attributes = f' xmpRights:Marked="{marked}"' if marked is not None else ""
    return (f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{embedded.RDF}">'
            f'<rdf:Description rdf:about="" xmlns:plus="{embedded.PLUS}" xmlns:Iptc4xmpExt="{embedded.IPTC_EXT}" '
            f'xmlns:dc="{embedded.DC}" xmlns:xmpRights="{embedded.XMP_RIGHTS}"{attributes}>'
            f'{"".join(properties)}</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def jpeg(picture: bytes, xmp: bytes | None = None, copyright_notice: str | None = None,
         c2pa_actions: list[Mapping[str, str]] | None = None, exif_user_comment: str | None = None) -> bytes:
    """``picture`` (a JPEG) with the given metadata segments after its SOI marker, the pixels untouched.

    ``exif_user_comment`` is written as AUTOMATIC1111 writes its parameters (piexif: "UNICODE", UTF-16BE)."""
    segments = b""
    if exif_user_comment is not None:
        exif = Image.Exif()
        exif.get_ifd(embedded.EXIF_IFD)[embedded.USER_COMMENT] = b"UNICODE\x00" + exif_user_comment.encode("utf-16-be")
        segments += _segment(0xE1, exif.tobytes())  # with its "Exif\0\0" header
    if xmp is not None:
        segments += _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp)
    if copyright_notice is not None:
        segments += _segment(0xED, _photoshop_iptc({(2, 116): copyright_notice.encode()}))
    if c2pa_actions is not None:
        segments += _segment(0xEB, b"JP" + struct.pack(">HI", 1, 1) + c2pa_store(c2pa_actions))
    return picture[:2] + segments + picture[2:]


def png(image: Image.Image, text: Mapping[str, str] | None = None, xmp: bytes | None = None,
        c2pa_actions: list[Mapping[str, str]] | None = None) -> bytes:
    """``image`` as a PNG with tEXt chunks (generators write these), an XMP iTXt chunk and a C2PA ``caBX`` chunk."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    if xmp is not None:
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    if c2pa_actions is not None:
        info.add(b"caBX", c2pa_store(c2pa_actions))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def webp(image: Image.Image, xmp: bytes | None = None, c2pa_actions: list[Mapping[str, str]] | None = None) -> bytes:
    """``image`` as a WebP with an XMP chunk and a C2PA chunk (appended: Pillow writes no C2PA chunk)."""
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", **({"xmp": xmp} if xmp is not None else {}))
    data = buffer.getvalue()
    if c2pa_actions is None:
        return data
    store = c2pa_store(c2pa_actions)
    chunks = data[12:] + b"C2PA" + struct.pack("<I", len(store)) + store + b"\x00" * (len(store) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _photoshop_iptc(datasets: Mapping[tuple[int, int], bytes]) -> bytes:
    iim = b"".join(struct.pack(">BBBH", 0x1C, record, number, len(value)) + value
                   for (record, number), value in datasets.items())
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + iim
    return b"Photoshop 3.0\x00" + resource + (b"\x00" if len(iim) % 2 else b"")


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _superbox(kind: str, label: str, *children: bytes) -> bytes:
    description = _box(b"jumd", _C2PA_UUID[kind] + bytes([0x03]) + label.encode() + b"\x00")
    return _box(b"jumb", description + b"".join(children))


def c2pa_store(actions: list[Mapping[str, str]]) -> bytes:
    """A C2PA manifest store (JUMBF) with one manifest whose ``c2pa.actions.v2`` assertion lists ``actions``."""
    import cbor2

    assertion = _superbox("63626f72", "c2pa.actions.v2", _box(b"cbor", cbor2.dumps({"actions": list(actions)})))
    manifest = _superbox("63326d61", "urn:uuid:00000000-0000-4000-8000-000000000000",
                         _superbox("63326173", "c2pa.assertions", assertion))
    return _superbox("63327061", "c2pa", manifest)
