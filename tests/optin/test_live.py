"""The intake app under uvicorn on 127.0.0.1, as a stranger or a contributor attacks it over real
sockets: header bytes, races with revocation, slow servers and clients, floods."""

from __future__ import annotations

import io
import re
import socket
import threading
from pathlib import Path

import httpx2
import pytest
from PIL import Image, ImageCms

from curate import catalog
from curate.optin import safety, submit
from curate.optin.options import IntakeLimits, Limits, SourceOptions
from curate.optin.store import ACTIVE, FILES

from .conftest import live_server, picture
from .runs import build_run, members, museum_rows, optin_rows

# Register as a browser whose User-Agent holds a raw NEL byte (0x85): latin-1 on the wire,
# U+0085 once decoded, a line break to str.splitlines.
NEL_AGENT = b"Mozilla/5.0 \x85 x"


class Visitor:
    """One browser: its own cookies, over a real connection to the server."""

    def __init__(self, base: str, **headers: bytes | str):
        self.http = httpx2.Client(base_url=base, headers=headers, follow_redirects=False, timeout=30)

    def csrf(self, path: str = "/") -> str:
        return re.search(r'name="csrf" value="([0-9a-f]{64})"', self.http.get(path).text).group(1)

    def post(self, path: str, form: dict[str, str], page: str = "/", **kwargs) -> httpx2.Response:
        return self.http.post(path, data={"csrf": self.csrf(page), **form}, **kwargs)

    def register(self, name: str = "Ann", contact: str = "ann@example.org", consent: bool = True) -> str:
        answer = self.post("/register", {"display_name": name, "contact": contact})
        assert answer.status_code == 200, answer.text
        token = re.search(r'id="new-token">([^<]+)<', answer.text).group(1)
        if consent:
            given = self.post("/consent", {"version": "consent-v1", "training": "on", "credit": "on", "agree": "on"},
                              "/consent")
            assert given.status_code == 303, given.text
        return token

    def upload(self, data: bytes = b"", **fields: str) -> httpx2.Response:
        files = {"image": ("photo.jpg", data, "image/jpeg")} if data else None
        return self.post("/upload", fields, "/me", files=files)

    def revoke(self) -> httpx2.Response:
        return self.post("/revoke", {"confirm": "on"}, "/me")


@pytest.fixture
def run_of(store, tmp_path):
    """Build a finished run over the store's submissions and a museum's; returns its folder."""
    def build() -> Path:
        out = tmp_path / "run"
        museum, museum_images = museum_rows(2)
        optin, optin_images = optin_rows(store)
        rows = museum + optin
        build_run(out, store, {"shard-00000": [r["key"] for r in rows]}, rows, {**museum_images, **optin_images})
        return out
    return build


def consistent(out: Path) -> set[str]:
    """The run's shards, catalog and records agree; returns the sample keys."""
    in_shards = set(members(out / "shards"))
    samples = {r["key"] for r in catalog.query(out, "SELECT key FROM samples").to_pylist()}
    kept = {r["key"] for r in catalog.query(out, "SELECT key FROM records WHERE status = 'kept'").to_pylist()}
    assert in_shards == samples == kept
    assert not (out / ".revoke-journal.json").exists()
    return in_shards


def test_a_raw_nel_byte_in_the_user_agent_then_a_revocation_works(store, tmp_path, run_of):
    out = tmp_path / "run"
    with live_server(store, runs=[out]) as base:
        ann = Visitor(base, **{"User-Agent": NEL_AGENT})
        ann.register()
        assert ann.upload(picture(1)).status_code == 303
        run_of()
        page = ann.revoke()
        assert page.status_code == 200 and "You revoked your consent" in page.text
    assert {k.split("-")[0] for k in consistent(out)} == {"met"}
    (consent_entry,) = [e for e in store.audit_entries() if e["event"] == "consent"]
    assert consent_entry["evidence"]["user_agent"] == "Mozilla/5.0 \x85 x"
    assert store.audit_entries()[-1]["event"] == "revoke_run"


def test_a_revocation_cut_short_midway_is_finished_and_the_run_stays_consistent(store, tmp_path, run_of,
                                                                                monkeypatch):
    out = tmp_path / "run"
    real_build = catalog.build
    with live_server(store, runs=[out]) as base:
        ann = Visitor(base, **{"User-Agent": NEL_AGENT})
        ann.register()
        ann.upload(picture(1))
        run_of()
        with monkeypatch.context() as patch:  # shards rewritten, then the catalog build fails
            patch.setattr(catalog, "build", lambda *_: (_ for _ in ()).throw(OSError("disk full")))
            page = ann.revoke()
        assert page.status_code == 200 and "did not finish" in page.text
        assert (out / ".revoke-journal.json").exists()
        failed = [e for e in store.audit_entries() if e["event"] == "revoke_run_failed"]
        assert failed and "disk full" in failed[0]["error"]
    assert catalog.build is real_build
    with live_server(store, runs=[out]):  # the server starting again finishes the pass
        pass
    assert {k.split("-")[0] for k in consistent(out)} == {"met"}
    assert store.audit_entries()[-1]["event"] == "revoke_run"


def test_an_upload_being_cleaned_during_a_revocation_does_not_survive_it(store, monkeypatch):
    cleaning, revoked = threading.Event(), threading.Event()
    real_clean = safety.clean

    def slow_clean(*args, **kwargs):
        cleaning.set()
        assert revoked.wait(20)
        return real_clean(*args, **kwargs)

    monkeypatch.setattr(submit.safety, "clean", slow_clean)
    with live_server(store) as base:
        ann = Visitor(base)
        ann.register()
        answers: list[httpx2.Response] = []
        csrf = ann.csrf("/me")
        uploading = threading.Thread(target=lambda: answers.append(ann.http.post(
            "/upload", data={"csrf": csrf}, files={"image": ("big.png", picture(2, 800, 600, "PNG"), "image/png")})))
        uploading.start()
        assert cleaning.wait(20)
        assert ann.revoke().status_code == 200
        revoked.set()
        uploading.join(30)
    assert answers[0].status_code == 403 and "revoked" in answers[0].text
    assert not [s for s in store.submissions() if s.status == ACTIVE]
    assert not list((store.root / FILES).iterdir())


def test_slow_url_fetches_are_bounded_and_the_next_one_is_told_to_come_back(store, trickler):
    trickler, requests = trickler
    options = SourceOptions(allow_hosts=[trickler], fetch_timeout_s=3, intake=IntakeLimits(max_fetches=1))
    with live_server(store, options) as base:
        ann, bob, stranger = Visitor(base), Visitor(base), Visitor(base)
        ann.register()
        bob.register("Bob", "bob@example.org")
        first: list[httpx2.Response] = []
        fetching = threading.Thread(target=lambda: first.append(ann.upload(url=f"{trickler}/a.jpg")))
        fetching.start()
        assert requests.acquire(timeout=20)
        second = bob.upload(url=f"{trickler}/b.jpg")
        assert second.status_code == 503 and "try again" in second.text and int(second.headers["retry-after"]) > 0
        assert second.headers["x-content-type-options"] == "nosniff"
        assert stranger.http.get("/").status_code == 200  # the page still answers
        fetching.join(30)
    assert first[0].status_code == 502 and "could not be fetched" in first[0].text  # the total deadline hit


def test_uploads_registrations_and_sign_ins_are_rate_limited_with_a_clear_429(store):
    options = SourceOptions(intake=IntakeLimits(uploads_per_hour=2, registrations_per_hour=2, signins_per_hour=3))
    with live_server(store, options) as base:
        ann = Visitor(base)
        token = ann.register()
        assert ann.upload(picture(1)).status_code == 303
        assert ann.upload(picture(2)).status_code == 303
        third = ann.upload(picture(3))
        assert third.status_code == 429 and "too many uploads" in third.text and "retry-after" in third.headers
        flood = Visitor(base)
        flood.register("Bob", "bob@example.org", consent=False)
        refused = flood.post("/register", {"display_name": "Eve", "contact": "eve@example.org"}, "/me")
        assert refused.status_code == 429 and "too many registrations" in refused.text
        assert refused.headers["content-security-policy"].startswith("default-src 'none'")
        guesser = Visitor(base)
        for _ in range(3):
            assert guesser.post("/signin", {"token": "guess"}).status_code == 401
        assert guesser.post("/signin", {"token": token}).status_code == 429  # even the right one, for now
    assert len(store.submissions()) == 2 and store.rows("SELECT count(*) n FROM contributors") == [{"n": 2}]


def closed_within(sock: socket.socket, trickle: bytes, every_s: float) -> bool:
    """Send ``trickle`` a byte at a time; True when the server hung up before it was all sent."""
    sock.settimeout(every_s)
    for byte in trickle:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1024) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def test_slow_headers_and_slow_bodies_are_cut_off(store):
    options = SourceOptions(intake=IntakeLimits(header_timeout_s=1, body_timeout_s=1))
    with live_server(store, options) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as headers:
            assert closed_within(headers, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40, 0.2)
        with socket.create_connection(("127.0.0.1", port)) as body:
            body.sendall(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                         b"\r\nContent-Length: 1000\r\n\r\n")
            assert closed_within(body, b"display_name=" + b"a" * 40, 0.2)
        assert Visitor(base).http.get("/").status_code == 200


def test_connections_beyond_the_limit_are_answered_503(store):
    options = SourceOptions(intake=IntakeLimits(max_connections=4))
    with live_server(store, options) as base:
        port = int(base.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            for sock in held:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half-sent
            with httpx2.Client(base_url=base) as late:
                assert late.get("/").status_code == 503
        finally:
            for sock in held:
                sock.close()


# EXIF blocks (found by fuzzing) on which Pillow's EXIF, orientation or encoding step raises: SyntaxError,
# struct.error, ValueError (an offset before the block). Each was a 500 before.
BAD_EXIF = {
    "not TIFF": b"Exif\x00\x00\x00\x00\x00",
    "struct.error": bytes.fromhex("45786966000049492a000800000004000001050002000000080000001201080002000000060000000001"
                                  "060000000080000010002588050000000080d3a18bc600000000267e2d5bd5e17b"),
    "negative seek": bytes.fromhex("45786966000049492a00080000000300698709000100000021bdcee02588080002000000e1afb386"
                                   "12010d00010000000800000000000000e317115bd655d254cf208d744a"),
}


def webp_with_exif(exif: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buffer, "WEBP", exif=exif)
    return buffer.getvalue()


def png_with_profile(profile: bytes, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, "PNG", icc_profile=profile)
    return buffer.getvalue()


def test_bad_input_is_a_4xx_with_the_security_headers_never_a_500(store):
    options = SourceOptions(limits=Limits(max_bytes=2000))
    with live_server(store, options) as base:
        ann = Visitor(base)
        ann.register()
        answers = {
            "too large for the body": ann.upload(b"\xff\xd8\xff" + b"\0" * 100_000),
            "empty label": ann.upload(url="http://a..b.example.org/x.jpg"),
            "over-long label": ann.upload(url=f"http://{'a' * 64}.example.org/x.jpg"),
            **{f"EXIF {kind} in WebP": ann.upload(webp_with_exif(exif)) for kind, exif in BAD_EXIF.items()},
        }
    statuses = {what: answer.status_code for what, answer in answers.items()}
    assert statuses == {"too large for the body": 413, "empty label": 400, "over-long label": 400,
                        **{f"EXIF {kind} in WebP": 415 for kind in BAD_EXIF}}
    for answer in answers.values():
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_colour_profile_is_applied_and_never_stored(store):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    junk = b"Ann Example, 1 Main Street, Springfield" * 4
    with live_server(store) as base:
        ann = Visitor(base)
        ann.register()
        assert ann.upload(png_with_profile(junk, (200, 100, 30))).status_code == 303
        assert ann.upload(png_with_profile(srgb, (30, 100, 200))).status_code == 303
    colours = []
    for submission in store.submissions():
        stored = store.file_path(submission).read_bytes()
        assert b"Main Street" not in stored and "icc_profile" not in Image.open(io.BytesIO(stored)).info
        colours.append(Image.open(io.BytesIO(stored)).getpixel((0, 0)))
    assert sorted(colours) == [(30, 100, 200), (200, 100, 30)]  # junk ignored, sRGB to sRGB unchanged


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(store):
    with live_server(store) as base:
        ann = Visitor(base)
        token = ann.register()
        stolen = Visitor(base)
        stolen.http.cookies = httpx2.Cookies(ann.http.cookies)
        assert stolen.http.get("/me").status_code == 200
        assert ann.post("/signout", {}, "/me").status_code == 303
        assert stolen.http.get("/me").status_code == 303  # sent home: the session is gone
        again = Visitor(base)
        assert again.post("/signin", {"token": token}).status_code == 303  # the token still signs in
        assert again.http.get("/me").status_code == 200


def test_secure_cookies_carry_the_host_prefix(store):
    with live_server(store, secure_cookies=True) as base:
        page = httpx2.post(f"{base}/register", data={"display_name": "Ann", "contact": "a@example.org", "csrf": "x"})
        first = httpx2.get(f"{base}/")
    (nonce,) = first.headers.get_list("set-cookie")
    assert nonce.startswith("__Host-optin_csrf=") and "Secure" in nonce and "Path=/" in nonce
    assert "Domain" not in nonce and page.status_code == 403


def test_the_origin_check_compares_the_scheme_and_the_host_header_is_checked(store):
    with live_server(store) as base:
        ann = Visitor(base)
        other_scheme = base.replace("http://", "https://")
        refused = ann.post("/register", {"display_name": "Ann", "contact": "a@example.org"},
                           headers={"Origin": other_scheme})
        assert refused.status_code == 403
        assert ann.post("/register", {"display_name": "Ann", "contact": "a@example.org"},
                        headers={"Origin": base}).status_code == 200
    options = SourceOptions(intake=IntakeLimits(public_origin="https://optin.example.org"))
    with live_server(store, options) as base:
        rebound = httpx2.get(f"{base}/", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400 and rebound.headers["x-content-type-options"] == "nosniff"
        assert httpx2.get(f"{base}/", headers={"Host": "optin.example.org"}).status_code == 200


@pytest.mark.parametrize("name", ["Ann \u202eelpmaxE", "An\u200bn", "\u2066Ann\u2069", "Ann\ufeff"])
def test_names_with_direction_controls_or_invisible_characters_are_refused(store, name):
    with live_server(store) as base:
        answer = Visitor(base).post("/register", {"display_name": name, "contact": "a@example.org"})
    assert answer.status_code == 400 and store.rows("SELECT count(*) n FROM contributors") == [{"n": 0}]


def test_a_consent_form_posting_off_is_not_consent(store):
    with live_server(store) as base:
        ann = Visitor(base)
        ann.register(consent=False)
        answer = ann.post("/consent", {"version": "consent-v1", "training": "off", "agree": "on"}, "/consent")
        assert answer.status_code == 400
        answer = ann.post("/consent", {"version": "consent-v1", "training": "on", "agree": "on",
                                       "credit": "off", "model_release": "on"}, "/consent")
        assert answer.status_code == 303
    (consent,) = store.consents()
    assert (consent.scope_credit, consent.scope_model_release) == (0, 1)
