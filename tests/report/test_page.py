"""The run report in headless Chromium (Debian's chromium + chromium-driver), opened from file:// as a
person opens it: no console errors, no request that fails or leaves the folder, every image there."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from optin.test_browser import CHROMEDRIVER, CHROMIUM, FLAGS
from optin.test_browser import pytestmark as needs_chromium

from curate import report
from curate.report import page


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def open_report(browser, index: Path, screenshot: Path) -> dict:
    """Load the page, wait for every image, save a full-page screenshot; what the page loaded and logged."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(index.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return [...document.images].every(i => i.complete)"))
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(height + 100, 16000))
    assert browser.save_screenshot(str(screenshot))
    return {
        "images": browser.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"),
        "resources": browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"),
        "console": browser.get_log("browser"),
        "svgs": browser.execute_script("return document.querySelectorAll('.plots svg').length"),
        "text": browser.find_element("tag name", "body").text,
    }


def check_page(loaded: dict, report_dir: Path) -> None:
    assert loaded["console"] == []  # no error, no refused request, no warning
    assert loaded["images"] and all(ok for _, ok in loaded["images"]), loaded["images"]
    for src, _ in loaded["images"]:
        assert (report_dir / src).is_file() and (report_dir / src).resolve().is_relative_to(report_dir)
    for name in loaded["resources"]:
        url = urlsplit(name)
        assert url.scheme == "file" and Path(unquote(url.path)).resolve().is_relative_to(report_dir), name
    html = (report_dir / page.INDEX).read_text()
    assert not re.search(r"""\ssrc=["']?(https?:)?//""", html)  # links may leave the page; nothing is fetched
    assert "<script" not in html and "<link" not in html


@needs_chromium
def test_demo_run_report_opens_from_file_with_every_image(demo_out, browser, tmp_path):
    report_dir = demo_out / report.FOLDER
    assert (report_dir / page.INDEX).is_file()  # written by the run's finalize
    loaded = open_report(browser, report_dir / page.INDEX, tmp_path / "report.png")
    check_page(loaded, report_dir.resolve())
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert loaded["svgs"] == 5  # aesthetic, watermark, NSFW, caption similarity; the step timings
    text = loaded["text"]
    for fate in ("duplicate:exact_sha256", "rejected:license_not_allowed", "failed:download_http_404"):
        assert fate in text
    assert "Stage timings and throughput" in text and "wall and CPU seconds per step" in text
    assert "threshold" in (report_dir / page.INDEX).read_text()


@needs_chromium
def test_report_of_a_run_with_opt_in_and_duplicates(credited_run, browser, tmp_path):
    paths = report.write(credited_run["out"])
    loaded = open_report(browser, paths["report"], tmp_path / "report.png")
    check_page(loaded, paths["report"].parent.resolve())
    assert "duplicate:exact_sha256" in loaded["text"] and "CC-BY-4.0" in loaded["text"]


HOSTILE = '<img src=x onerror="alert(1)"> [click](javascript:alert(1)) **bold**'


def test_record_values_are_text_on_the_page_and_in_the_credits(tmp_path):
    from .conftest import make_run

    paths = report.write(make_run(tmp_path, first_title=HOSTILE)["out"])
    index = paths["report"].read_text()
    assert "<img src=x" not in index and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in index
    assert 'href="javascript' not in index
    credits_md = paths["credits_md"].read_text()
    assert "](javascript" not in credits_md
    assert r"\[click\]\(javascript:alert\(1\)\) \*\*bold\*\*" in credits_md
    assert "\\<img src=x" in credits_md
