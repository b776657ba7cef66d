"""The intake app over HTTP (FastAPI's test client): CSRF, cookies, upload checks, ownership."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from curate.localserve import serve
from curate.optin.options import Limits, SourceOptions
from curate.optin.store import FILES
from curate.optin.web import CSRF_COOKIE, SESSION_COOKIE, create_app

from .conftest import picture
from .runs import build_run, members, museum_rows, optin_rows

BASE = "http://127.0.0.1:8000"


def client_for(store, options: SourceOptions | None = None, runs: list[Path] = ()) -> TestClient:
    return TestClient(create_app(store, options or SourceOptions(), runs, secure_cookies=False), base_url=BASE)


def csrf(client: TestClient, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', client.get(path).text).group(1)


def registered(client: TestClient, consent: bool = True) -> str:
    page = client.post("/register", data={"display_name": "Ann", "contact": "ann@example.org",
                                          "csrf": csrf(client)})
    assert page.status_code == 200
    token = re.search(r'id="new-token">([^<]+)<', page.text).group(1)
    if consent:
        answer = client.post("/consent", data={"csrf": csrf(client, "/consent"), "version": "consent-v1",
                                               "training": "on", "credit": "on", "agree": "on"},
                             follow_redirects=False)
        assert answer.status_code == 303
    return token


def upload(client: TestClient, data: bytes = b"", name: str = "photo.jpg", **fields: str):
    files = {"image": (name, data, "image/jpeg")} if data else None
    return client.post("/upload", data={"csrf": csrf(client, "/me"), **fields}, files=files, follow_redirects=False)


def test_forms_need_the_token_of_this_browser_from_this_origin(store):
    client = client_for(store)
    token = csrf(client)
    form = {"display_name": "Ann", "contact": "ann@example.org"}
    assert client.post("/register", data={**form, "csrf": "0" * 64}).status_code == 403
    assert client.post("/register", data={**form, "csrf": token},
                       headers={"Origin": "https://attacker.example"}).status_code == 403
    other_browser = client_for(store)  # no nonce cookie: the copied token means nothing there
    assert other_browser.post("/register", data={**form, "csrf": token}).status_code == 403
    assert store.rows("SELECT count(*) AS n FROM contributors") == [{"n": 0}]
    assert client.post("/register", data={**form, "csrf": token}, headers={"Origin": BASE}).status_code == 200


def test_cookies_are_http_only_and_same_site_strict(store):
    client = client_for(store)
    client.get("/")
    page = client.post("/register", data={"display_name": "Ann", "contact": "ann@example.org",
                                          "csrf": csrf(client)})
    cookies = page.headers.get_list("set-cookie")
    token_cookie = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in token_cookie and "SameSite=strict" in token_cookie
    assert any(c.startswith(CSRF_COOKIE) for c in client.get("/").headers.get_list("set-cookie")) is False
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_a_token_signs_in_from_another_browser(store):
    token = registered(client_for(store))
    other = client_for(store)
    assert other.post("/signin", data={"token": "wrong", "csrf": csrf(other)}).status_code == 401
    answer = other.post("/signin", data={"token": token, "csrf": csrf(other)}, follow_redirects=False)
    assert answer.status_code == 303 and "Your contributions" in other.get("/me").text


def test_upload_needs_consent(store):
    client = client_for(store)
    registered(client, consent=False)
    assert upload(client, picture(1)).status_code == 403
    assert not any((store.root / FILES).iterdir())


def test_bodies_above_the_limit_are_refused_before_parsing(store):
    client = client_for(store, SourceOptions(limits=Limits(max_bytes=1000)))
    registered(client)
    assert upload(client, b"\xff\xd8\xff" + b"\0" * 100_000).status_code == 413  # past the body limit
    assert upload(client, picture(1, 200, 200)).status_code == 413  # within the body, past the image limit


def test_upload_type_comes_from_bytes_and_the_name_is_never_a_path(store, tmp_path):
    client = client_for(store)
    registered(client)
    refused = upload(client, b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
                     name="cute.jpg")
    assert refused.status_code == 415 and "markup" in refused.text
    png = picture(2, fmt="PNG")
    assert upload(client, png, name="../../../escape.jpg", caption="a PNG called .jpg").status_code == 303
    (stored,) = (store.root / FILES).iterdir()
    assert stored.suffix == ".png" and len(stored.stem) == 64
    assert not list(tmp_path.rglob("escape*"))
    page = client.get("/me").text
    assert "a PNG called .jpg" in page and "escape" not in page
    (submission,) = store.submissions()
    image = client.get(f"/submissions/{submission.submission_id}/image")
    assert image.headers["content-type"] == "image/png" and image.headers["x-content-type-options"] == "nosniff"


def test_url_submissions_are_refused_for_loopback_unless_the_pipeline_allows_the_host(store, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "photo.jpg").write_bytes(picture(3))
    with serve(tmp_path / "site") as base:
        client = client_for(store)
        registered(client)
        refused = upload(client, url=f"{base}photo.jpg")
        assert refused.status_code == 400 and "not a host this server fetches from" in refused.text
        allowing = client_for(store, SourceOptions(allow_hosts=[base.rstrip("/")]))
        allowing.cookies = client.cookies
        assert upload(allowing, url=f"{base}photo.jpg", title="Fetched").status_code == 303
    (submission,) = store.submissions()
    assert (submission.title, submission.source_url) == ("Fetched", f"{base}photo.jpg")


def test_images_are_shown_to_their_owner_only(store):
    ann = client_for(store)
    registered(ann)
    upload(ann, picture(4))
    (submission,) = store.submissions()
    bob = client_for(store)
    registered(bob)
    assert ann.get(f"/submissions/{submission.submission_id}/image").status_code == 200
    assert bob.get(f"/submissions/{submission.submission_id}/image").status_code == 404
    assert client_for(store).get(f"/submissions/{submission.submission_id}/image").status_code == 404


def test_revoking_on_the_page_cleans_the_runs_the_server_was_given(store, tmp_path):
    out = tmp_path / "run"
    client = client_for(store, runs=[out])
    registered(client)
    upload(client, picture(5))
    museum, museum_images = museum_rows(2)
    optin, optin_images = optin_rows(store)
    build_run(out, store, {"shard-00000": [r["key"] for r in museum + optin]}, museum + optin,
              {**museum_images, **optin_images})
    (ann_key,) = [r["key"] for r in optin]
    assert ann_key in members(out / "shards")
    assert client.post("/revoke", data={"csrf": csrf(client, "/me")}).status_code == 400  # unconfirmed
    page = client.post("/revoke", data={"csrf": csrf(client, "/me"), "confirm": "on"})
    assert page.status_code == 200 and "You revoked your consent" in page.text
    assert ann_key not in members(out / "shards") and set(members(out / "shards")) == {r["key"] for r in museum}
    assert upload(client, picture(6)).status_code == 403


@pytest.mark.parametrize("path", ["/me", "/consent"])
def test_pages_behind_sign_in_send_strangers_home(store, path):
    answer = client_for(store).get(path, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_a_logged_value_holding_a_line_separator_cannot_break_revocation(store, tmp_path):
    """U+0085, U+2028 or U+2029 in a logged value (a User-Agent, consent evidence) once split its audit line,
    so every later revocation failed halfway."""
    out = tmp_path / "run"
    client = client_for(store, runs=[out])
    registered(client)
    store.audit("note", value="a\u2028b\u2029c\x85d")
    upload(client, picture(5))
    museum, museum_images = museum_rows(1)
    optin, optin_images = optin_rows(store)
    build_run(out, store, {"shard-00000": [r["key"] for r in museum + optin]}, museum + optin,
              {**museum_images, **optin_images})
    page = client.post("/revoke", data={"csrf": csrf(client, "/me"), "confirm": "on"})
    assert page.status_code == 200 and "You revoked your consent" in page.text
    assert set(members(out / "shards")) == {r["key"] for r in museum}
    events = store.audit_entries()
    assert [e["value"] for e in events if e["event"] == "note"] == ["a\u2028b\u2029c\x85d"]
    assert events[-1]["event"] == "revoke_run"
    assert all(line.isascii() for line in (store.root / "audit.jsonl").read_text().split("\n"))


def test_a_corrupt_audit_line_is_reported_and_never_stops_a_revocation(store, tmp_path, caplog):
    out = tmp_path / "run"
    client = client_for(store, runs=[out])
    registered(client)
    upload(client, picture(5))
    with open(store.root / "audit.jsonl", "a", encoding="utf-8") as log:
        log.write('{"event": "torn wri\n')
    optin, optin_images = optin_rows(store)
    build_run(out, store, {"shard-00000": [r["key"] for r in optin]}, optin, optin_images)
    page = client.post("/revoke", data={"csrf": csrf(client, "/me"), "confirm": "on"})
    assert page.status_code == 200
    lines = (store.root / "audit.jsonl").read_text().split("\n")
    torn = next(n for n, line in enumerate(lines, start=1) if "torn" in line)
    assert f"audit.jsonl:{torn}: not JSON" in caplog.text
    assert store.audit_entries()[-1]["event"] == "revoke_run"
