"""Rights metadata embedded in originals, read by the Normaliser and decided by the embedded-rights checks."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
from PIL import Image

from curate import demo, licenses, pixels, records
from curate.rights import marked
from curate.rights.evidence import EmbeddedEvidence
from curate.rights.filters import EmbeddedRights

TARGET = pixels.Target(size=64)
DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def plain_jpeg(seed: int = 1) -> bytes:
    return demo.picture(seed, 96, 80)


def plain_image(seed: int = 1) -> Image.Image:
    return Image.open(io.BytesIO(plain_jpeg(seed))).convert("RGB")


def fetched(data: bytes) -> str | None:
    """The rights column fetch stores for an original: what the Normaliser found in it."""
    stored, width, height, *_, error = pixels.Normaliser(TARGET)(io.BytesIO(data))
    assert error is None and Image.open(io.BytesIO(bytes(stored))).size == (width, height)
    return stored.rights


def record(data: bytes, license_id: str = "CC0-1.0") -> dict:
    row = records.candidate("test", "1", url="http://127.0.0.1/x", license=license_id, license_field="license",
                            license_value=license_id,
                            license_evidence=json.dumps([{"field": "license", "value": license_id}]))
    row["rights"] = fetched(data)
    return row


def decided(row: dict) -> tuple[str, str] | None:
    return EmbeddedRights(strict=True).decide(row)


MARKED = {
    "plus DataMining prohibited (JPEG XMP)": (marked.jpeg(plain_jpeg(), xmp=marked.xmp_packet(
        data_mining=marked.DMI_PROHIBITED_AI)), "data_mining_prohibited", "DMI-PROHIBITED-AIMLTRAINING"),
    "plus DataMining prohibited (PNG XMP)": (marked.png(plain_image(), xmp=marked.xmp_packet(
        data_mining="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED")), "data_mining_prohibited", "DMI-PROHIBITED"),
    "trainedAlgorithmicMedia (JPEG XMP)": (marked.jpeg(plain_jpeg(), xmp=marked.xmp_packet(
        digital_source_type=DST + "trainedAlgorithmicMedia")), "ai_generated", "trainedAlgorithmicMedia"),
    "compositeSynthetic (WebP XMP)": (marked.webp(plain_image(), xmp=marked.xmp_packet(
        digital_source_type=DST + "compositeSynthetic")), "ai_generated", "compositeSynthetic"),
    "algorithmicMedia (PNG XMP)": (marked.png(plain_image(), xmp=marked.xmp_packet(
        digital_source_type=DST + "algorithmicMedia")), "ai_generated", "algorithmicMedia"),
    "C2PA created by a model": (marked.jpeg(plain_jpeg(), c2pa_actions=[
        {"action": "c2pa.created", "digitalSourceType": DST + "trainedAlgorithmicMedia"}]),
        "ai_generated", "C2PA manifest (signature not verified): c2pa.created"),
    "C2PA opened from a model's composite": (marked.jpeg(plain_jpeg(), c2pa_actions=[
        {"action": "c2pa.opened", "digitalSourceType": DST + "compositeSynthetic"}]), "ai_generated", "c2pa.opened"),
    "C2PA in a PNG caBX chunk": (marked.png(plain_image(), c2pa_actions=[
        {"action": "c2pa.created", "digitalSourceType": DST + "trainedAlgorithmicMedia"}]), "ai_generated", "c2pa"),
    "C2PA in a WebP C2PA chunk": (marked.webp(plain_image(), c2pa_actions=[
        {"action": "c2pa.created", "digitalSourceType": DST + "algorithmicMedia"}]), "ai_generated", "c2pa"),
    "AUTOMATIC1111 parameters": (marked.png(plain_image(), text={
        "parameters": "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"}),
        "ai_generated", "AUTOMATIC1111"),
    "AUTOMATIC1111 JPEG UserComment": (marked.jpeg(plain_jpeg(), exif_user_comment=(
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")), "ai_generated", "EXIF 'UserComment'"),
    "ComfyUI prompt": (marked.png(plain_image(), text={
        "prompt": json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}})}), "ai_generated", "ComfyUI"),
    "ComfyUI workflow": (marked.png(plain_image(), text={"workflow": json.dumps({"nodes": [{"id": 1}], "links": []})}),
                         "ai_generated", "'workflow' as ComfyUI"),
    "NovelAI Comment": (marked.png(plain_image(), text={
        "Software": "NovelAI", "Comment": json.dumps({"prompt": "a cat", "steps": 28, "sampler": "k_euler"})}),
        "ai_generated", "NovelAI"),
}


@pytest.mark.parametrize("case", list(MARKED))
def test_each_embedded_marker_rejects_its_image_with_the_evidence(case):
    data, reason, evidence = MARKED[case]
    verdict = decided(record(data))
    assert verdict is not None and verdict[0] == reason
    assert evidence in verdict[1]


CONTROLS = {
    "no metadata": plain_jpeg(),
    "a camera's capture, its photographer named": marked.jpeg(plain_jpeg(), xmp=marked.xmp_packet(
        digital_source_type=DST + "digitalCapture", rights="Demo Photographer",
        data_mining="http://ns.useplus.org/ldf/vocab/DMI-ALLOWED")),
    "a C2PA capture by a camera": marked.jpeg(plain_jpeg(), c2pa_actions=[
        {"action": "c2pa.created", "digitalSourceType": DST + "digitalCapture"}]),
    "a model's words in an ordinary PNG description": marked.png(plain_image(), text={
        "parameters": "exposure 1/250", "Comment": "shot with a diffusion filter"}),
}


@pytest.mark.parametrize("case", list(CONTROLS))
def test_unmarked_and_harmless_metadata_is_kept(case):
    assert decided(record(CONTROLS[case])) is None


def test_a_switched_off_check_keeps_what_it_would_reject():
    row = record(MARKED["AUTOMATIC1111 parameters"][0])
    assert EmbeddedRights({"generator_text": False}, strict=True).decide(row) is None


def test_the_stored_image_carries_none_of_the_metadata():
    stored, *_ = pixels.Normaliser(TARGET)(io.BytesIO(MARKED["C2PA created by a model"][0]))
    image = Image.open(io.BytesIO(bytes(stored)))
    assert "xmp" not in image.info and not [m for m, _ in image.applist if m in ("APP1", "APP11", "APP13")]


def weigh(row: dict) -> dict:
    table = records.to_table([row]).append_column("rights", pa.array([row["rights"]]))
    return EmbeddedEvidence(licenses.Policy.default())(table).to_pylist()[0]


def test_an_embedded_copyright_notice_contradicting_cc0_is_a_license_conflict():
    notice = "(c) 2021 A. Photographer. All rights reserved."
    row = weigh(record(marked.jpeg(plain_jpeg(), copyright_notice=notice)))
    assert (row["status"], row["reason"]) == ("rejected", "license_conflict")
    assert "embedded IPTC copyright notice" in row["detail"] and notice in row["detail"]
    assert "embedded IPTC copyright notice" in row["license_evidence"]


def test_an_embedded_license_link_of_another_family_is_a_license_conflict():
    xmp = marked.xmp_packet(web_statement="https://creativecommons.org/licenses/by-nc/4.0/", marked=True)
    row = weigh(record(marked.jpeg(plain_jpeg(), xmp=xmp)))
    assert (row["status"], row["reason"]) == ("rejected", "license_conflict")
    assert "xmpRights:WebStatement" in row["detail"]


def test_embedded_statements_that_name_no_license_are_kept_as_evidence():
    row = weigh(record(marked.jpeg(plain_jpeg(), xmp=marked.xmp_packet(rights="Demo Photographer"))))
    assert row["status"] == "pending"
    assert "Demo Photographer" in row["license_evidence"]
