"""The intake page in headless Chromium (Debian's chromium + chromium-driver), served by uvicorn
on loopback: register, consent, upload, see the submission, revoke; the run given to the
server loses the sample and keeps every other one byte for byte."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from .conftest import live_server
from .runs import build_run, members, museum_rows, optin_rows

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                "(apt-get install chromium chromium-driver; the Makefile's test set-up does)")
# The flags that work on these machines: no sandbox as root, and no background traffic to a
# closed network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,1600")


@pytest.fixture
def live(store, tmp_path):
    """The app under uvicorn on a free loopback port; yields (base url, run folder it revokes in)."""
    out = tmp_path / "run"
    with live_server(store, runs=[out]) as base:
        yield base, out


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.implicitly_wait(10)
        try:
            yield driver
        finally:
            driver.quit()


def phone_photo(path: Path) -> Path:
    """A JPEG as a phone writes it: sideways pixels, an orientation tag and a GPS position."""
    image = Image.new("RGB", (320, 240), (200, 40, 40))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    path.write_bytes(buffer.getvalue())
    return path


def submit_form(driver, form_id: str, fields: dict[str, str] = (), ticks: tuple[str, ...] = ()) -> None:
    from selenium.webdriver.common.by import By

    for field, value in dict(fields).items():
        driver.find_element(By.ID, field).send_keys(value)
    for box in ticks:
        driver.find_element(By.ID, box).click()
    driver.find_element(By.CSS_SELECTOR, f"#{form_id} button[type=submit]").click()


def test_register_consent_upload_see_and_revoke_in_chromium(live, browser, store, tmp_path):
    from selenium.webdriver.common.by import By

    base, out = live
    browser.get(base + "/")
    submit_form(browser, "register", {"display_name": "Ann Example", "contact": "ann@example.org"})
    token = browser.find_element(By.ID, "new-token").text
    assert len(token) == 43 and store.contributor_by_token(token).display_name == "Ann Example"

    browser.find_element(By.ID, "to-consent").click()
    assert "consent, version 1" in browser.find_element(By.ID, "consent-text").text
    submit_form(browser, "consent", ticks=("scope-training", "scope-credit", "agree"))
    assert "training, credit" in browser.find_element(By.ID, "consent-summary").text

    photo = phone_photo(tmp_path / "IMG 0001 at home.jpg")
    submit_form(browser, "upload", {"image": str(photo), "caption": "Red wall in the evening"})
    assert "your image was added" in browser.find_element(By.ID, "notice").text
    row = browser.find_element(By.CSS_SELECTOR, "#submissions tr.submission")
    assert "Red wall in the evening" in row.text and row.find_element(By.CLASS_NAME, "status").text == "active"
    thumbnail = row.find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].naturalWidth", thumbnail) == 240  # upright now
    (submission,) = store.submissions()
    stored = store.file_path(submission).read_bytes()
    assert b"GPS" not in stored and Image.open(io.BytesIO(stored)).size == (240, 320)

    museum, museum_images = museum_rows(3)
    optin, optin_images = optin_rows(store)
    layout = {"shard-00000": [museum[0]["key"], optin[0]["key"]], "shard-00001": [r["key"] for r in museum[1:]]}
    build_run(out, store, layout, museum + optin, {**museum_images, **optin_images})
    before = members(out / "shards")

    submit_form(browser, "revoke", ticks=("confirm-revoke",))
    assert "You revoked your consent" in browser.find_element(By.ID, "revoked").text
    assert browser.find_element(By.CSS_SELECTOR, "#submissions .status").text == "revoked"
    after = members(out / "shards")
    assert after == {k: v for k, v in before.items() if k != optin[0]["key"]}
    assert set(after) == {r["key"] for r in museum}
    assert not store.file_path(submission).exists()
