"""The headless-Chromium harness (tests/browser.py) can fail a report: console errors,
uncaught exceptions and missing resources show in ``page.errors``; a clean page has none,
and its DOM and a full-page screenshot can be checked."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.browser import BrowserError, HeadlessChromium, find_chromium

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def page_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "page.html"
    path.write_text(f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>")
    return path


async def test_console_error_is_reported(chromium: HeadlessChromium, tmp_path: Path) -> None:
    page = await chromium.open(
        page_file(tmp_path, "<script>console.error('deliberate', 7)</script>")
    )
    assert page.errors == ["console.error: deliberate 7"]
    await page.close()


async def test_uncaught_exception_is_reported(chromium: HeadlessChromium, tmp_path: Path) -> None:
    page = await chromium.open(
        page_file(tmp_path, "<script>throw new Error('deliberate')</script>")
    )
    assert len(page.errors) == 1
    assert page.errors[0].startswith("uncaught: Error: deliberate")
    await page.close()


async def test_missing_resource_is_reported(chromium: HeadlessChromium, tmp_path: Path) -> None:
    page = await chromium.open(page_file(tmp_path, '<img src="missing.png">'))
    assert page.errors == [
        f"failed load: {(tmp_path / 'missing.png').as_uri()}: net::ERR_FILE_NOT_FOUND"
    ]
    await page.close()


async def test_clean_page_evaluate_click_and_screenshot(
    chromium: HeadlessChromium, tmp_path: Path
) -> None:
    # Taller than the 600 px viewport: the screenshot must cover the whole page.
    page = await chromium.open(
        page_file(
            tmp_path,
            '<svg width="200" height="100"><rect id="bar" width="120" height="40"'
            ' fill="steelblue"/></svg>'
            "<button onclick=\"this.textContent = 'clicked'\">click me</button>"
            '<div style="height: 2000px"></div>',
        )
    )
    assert page.errors == []
    assert await page.evaluate("document.getElementById('bar').getBBox().width") == 120
    await page.evaluate("document.querySelector('button').click()")
    assert await page.evaluate("document.querySelector('button').textContent") == "clicked"

    png = (await page.screenshot(tmp_path / "page.png")).read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 1000
    width, height = struct.unpack(">II", png[16:24])  # IHDR, the first chunk
    assert width >= 200
    assert height >= 2000
    await page.close()


async def test_evaluate_raises_on_a_script_error(chromium: HeadlessChromium) -> None:
    page = await chromium.open("data:text/html,<p>x</p>")
    with pytest.raises(BrowserError, match="ReferenceError"):
        await page.evaluate("no_such_function()")
    await page.close()


async def test_missing_page_raises(chromium: HeadlessChromium, tmp_path: Path) -> None:
    with pytest.raises(BrowserError, match="ERR_FILE_NOT_FOUND"):
        await chromium.open(tmp_path / "absent.html")


def test_missing_chromium_names_make_setup(tmp_path: Path) -> None:
    with pytest.raises(BrowserError, match=r"chromium-\*/usr/lib/chromium/chromium.*make setup"):
        find_chromium(tmp_path)
