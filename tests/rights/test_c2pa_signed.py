"""C2PA manifests signed by c2pa-python's Builder with a throwaway certificate chain made here.

The SDK's verification is evidence in the rejection's detail: a valid signature (from a signer
no trust list names), an invalid one (the file changed after signing), or none at all. A
model's making action rejects the image in every case; a camera's capture is kept.
"""

from __future__ import annotations

import datetime
import io
import json

import c2pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from curate import demo
from curate.rights import marked
from tests.rights.test_embedded import decided, record

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cleanroom tests")])


def _usage(signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signer, crl_sign=not signer,
                         encipher_only=False, decipher_only=False)


def _certificate(subject: str, key, issuer: x509.Name, issuer_key, signer: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=not signer, path_length=None), critical=True)
               .add_extension(_usage(signer), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if signer:  # C2PA's certificate profile: an end-entity key for signing documents, not a CA's
        builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                  critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def signer():
    """An ES256 signer: a test CA and the end-entity certificate it issued, both made now."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("cleanroom test CA", ca_key, _name("cleanroom test CA"), ca_key, signer=False)
    leaf = _certificate("cleanroom test signer", key, ca.subject, ca_key, signer=True)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    made = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=private, ta_url=None))
    yield made
    made.close()


def signed(signer, data: bytes, media_type: str, source_type: str) -> bytes:
    manifest = {"claim_generator_info": [{"name": "cleanroom-tests", "version": "1"}], "title": "a test image",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": DST + source_type}]}}]}
    out = io.BytesIO()
    with c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(signer, media_type, io.BytesIO(data), out)
    return out.getvalue()


def png_picture() -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(demo.picture(2, 96, 80))).save(buffer, "PNG")
    return buffer.getvalue()


def altered(jpeg: bytes) -> bytes:
    """The signed file with a comment added before its scan: the pixels decode as before, the hash breaks."""
    scan = 2  # after SOI, segment by segment (marker, big-endian length) up to the start of scan
    while jpeg[scan + 1] != 0xDA:
        scan += 2 + int.from_bytes(jpeg[scan + 2:scan + 4], "big")
    comment = b"edited after signing"
    return jpeg[:scan] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[scan:]


@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png"])
def test_a_validly_signed_ai_claim_rejects_with_the_signature_valid(signer, media_type):
    original = demo.picture(1, 96, 80) if media_type == "image/jpeg" else png_picture()
    verdict = decided(record(signed(signer, original, media_type, "trainedAlgorithmicMedia")))
    assert verdict == ("ai_generated", "C2PA manifest (signature valid, signer not on a trust list): c2pa.created "
                                       f"with digitalSourceType {DST}trainedAlgorithmicMedia")


def test_an_ai_claim_whose_signature_no_longer_verifies_still_rejects_and_says_so(signer):
    verdict = decided(record(altered(signed(signer, demo.picture(1, 96, 80), "image/jpeg",
                                            "trainedAlgorithmicMedia"))))
    assert verdict is not None and verdict[0] == "ai_generated"
    assert verdict[1].startswith("C2PA manifest (signature invalid: assertion.dataHash.mismatch")
    assert "c2pa.created" in verdict[1]


def test_an_unsigned_ai_claim_rejects_and_says_the_signature_is_not_verifiable():
    verdict = decided(record(marked.jpeg(demo.picture(1, 96, 80), c2pa_actions=[
        {"action": "c2pa.created", "digitalSourceType": DST + "trainedAlgorithmicMedia"}])))
    assert verdict is not None and verdict[0] == "ai_generated"
    assert verdict[1].startswith("C2PA manifest (signature not verified): c2pa.created")
    assert "the signature is not verifiable: " in verdict[1] and "claim" in verdict[1]


def test_a_signed_camera_capture_is_kept(signer):
    assert decided(record(signed(signer, demo.picture(1, 96, 80), "image/jpeg", "digitalCapture"))) is None
