"""The studio in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): generate
images, stream copy, read PNG info back; a screenshot of each step lands in the test's tmp folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from api_server import BRIEF, Server, make_home, make_store

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("browser")
    srv = Server(make_home(root), make_store(root), ui=True)
    srv.start(120)
    yield srv
    srv.stop()


def test_studio_in_chromium(server: Server, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Debian chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.set_default_timeout(120_000)
        page.goto(server.url + "/")
        expect(page.get_by_text("brushpen studio").first).to_be_visible()

        # Images: the default model is the store's tiny GAN; a prompt word picks the class.
        page.locator("#images-generate").wait_for()
        page.get_by_label("Prompt (class)").fill("flag")
        page.locator("#images-generate").click()
        expect(page.locator("#images-status")).to_contain_text("8 image(s) from shapes", timeout=120_000)
        expect(page.locator("#images-gallery img")).to_have_count(8)
        page.screenshot(path=str(tmp_path / "1-images.png"), full_page=True)

        # Copy: the first variant box fills while the model writes.
        page.get_by_role("tab", name="Copy").click()
        page.locator("#copy-brief textarea").fill(BRIEF)
        page.locator("#copy-write").click()
        expect(page.locator("#copy-status")).to_contain_text(re.compile(r"\d variant\(s\), seed \d+"), timeout=180_000)
        first = page.locator("#copy-variant-0 textarea").input_value()
        assert len(first.strip()) > 3
        page.screenshot(path=str(tmp_path / "2-copy.png"), full_page=True)

        # History: drop one of the generated PNGs into PNG info and read its settings back.
        png = sorted((server.home / "history" / "images").glob("*.png"))[0]
        page.get_by_role("tab", name="History").click()
        page.locator("#pnginfo-file input[type=file]").set_input_files(str(png))
        expect(page.locator("#pnginfo-text")).to_contain_text("Model: shapes", timeout=60_000)
        expect(page.locator("#pnginfo-text")).to_contain_text("Class: Flags")
        page.screenshot(path=str(tmp_path / "3-pnginfo.png"), full_page=True)
        browser.close()
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("1-images.png", "2-copy.png", "3-pnginfo.png"))
