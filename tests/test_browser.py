"""The studio in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright), against the
real `brushpen studio` server: generate GAN images and send them to the checker, watch copy stream
in, switch to a diffusers pipeline (its A1111 controls appear), read PNG info back and re-run it.
A screenshot of each step lands in the test's tmp folder."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from api_server import BRIEF, Server, make_home, make_store
from brushpen.store import link_model
from conftest import REPO, save_tiny_sd_pipeline

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("browser")
    store = make_store(root)
    link_model(save_tiny_sd_pipeline(root / "tiny-sd"), "diffusers", "tiny", root=store)
    link_model(REPO / "weights" / "safety" / "detector", "safety", "detector", root=store)  # the shipped checker
    srv = Server(make_home(root), store, ui=True)
    srv.start(120)
    yield srv
    srv.stop()


def set_number(page: Page, elem_id: str, value: int) -> None:
    """Type into a Number (or a Slider's number box) and blur it, which commits the value."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")


def pick_model(page: Page, name: str) -> None:
    page.locator("#images-model input").click()
    page.get_by_role("option", name=name, exact=True).click()


def history_pngs(server: Server) -> list[Path]:
    return sorted((server.home / "history" / "images").glob("*.png"), key=lambda p: p.stat().st_mtime_ns)


def test_studio_in_chromium(server: Server, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Debian chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.set_default_timeout(120_000)
        page.goto(server.url + "/")
        expect(page.get_by_text("brushpen studio").first).to_be_visible()

        # Images from the tiny class-conditional GAN: a prompt word picks the class.
        pick_model(page, "shapes")
        expect(page.locator("#images-psi")).to_be_visible()
        expect(page.locator("#images-negative")).to_be_hidden()
        page.locator("#images-prompt textarea").fill("flag")
        page.locator("#images-dice").click()   # a random seed fills the box...
        expect(page.locator("#images-seed input")).to_have_value(re.compile(r"^\d+$"))
        set_number(page, "images-seed", 40)     # ... and a typed one replaces it
        page.locator("#images-generate").click()
        expect(page.locator("#images-status")).to_contain_text("8 image(s) from shapes, seeds 40–47, class Flags")
        expect(page.locator("#images-gallery img")).to_have_count(8)
        page.screenshot(path=str(tmp_path / "1-images.png"), full_page=True)
        gan_pngs = history_pngs(server)
        assert len(gan_pngs) == 8

        # "Send to checker" puts the same eight files into the Checker tab's input and shows it.
        page.locator("#images-to-checker").click()
        expect(page.locator("#checker-go")).to_be_visible()
        files = page.locator("#checker-files")
        for png in gan_pngs:
            expect(files).to_contain_text(png.stem)   # the name and ".png" sit in two spans
        # Check them: eight verdicts in the table, and the status counts them.
        page.locator("#checker-go").click()
        expect(page.locator("#checker-status")).to_contain_text("total: 8", timeout=120_000)
        expect(page.locator("#checker-table")).to_contain_text(gan_pngs[0].name)
        # Our own images carry a valid manifest and our watermark: provenance decides, and the panel says why.
        assert "ai-made" in page.locator("#checker-table").inner_text()
        expect(page.locator("#checker-credentials")).to_contain_text("Verdict ai-made (provenance)")
        expect(page.locator("#checker-credentials")).to_contain_text("declares AI generation")
        page.screenshot(path=str(tmp_path / "2-checker.png"), full_page=True)

        # Copy, deliberate (the default): the status says it is drafting, then the picks arrive.
        page.get_by_role("tab", name="Copy").click()
        page.locator("#copy-brief textarea").fill(BRIEF)
        # A fixed seed: a variant that repeats another is dropped by design, so a random seed could
        # return fewer than the 3 asked for.
        set_number(page, "copy-seed", 3)
        page.locator("#copy-write").click()
        expect(page.locator("#copy-status")).to_contain_text("drafting 12 candidates", timeout=30_000)
        expect(page.locator("#copy-status")).to_contain_text("variant(s), seed 3", timeout=180_000)
        # Plain sampling: the first variant's box fills while the model writes (seen at several lengths).
        page.locator("#copy-deliberate input").uncheck()
        page.locator("#copy-write").click()
        expect(page.locator("#copy-status")).to_contain_text("writing...", timeout=30_000)
        box, status, seen = page.locator("#copy-variant-0 textarea"), page.locator("#copy-status"), set()
        deadline = time.monotonic() + 180
        while not re.search(r"\d variant\(s\), seed \d+", status.inner_text()) and time.monotonic() < deadline:
            seen.add(box.input_value())
            time.sleep(0.05)
        expect(status).to_contain_text("3 variant(s), seed 3")
        final = box.input_value()
        assert len(final.strip()) > 3
        assert len({s for s in seen if s and s != final}) >= 2, f"no partial text was shown: {seen}"
        page.screenshot(path=str(tmp_path / "3-copy.png"), full_page=True)

        # A diffusers pipeline shows A1111's controls instead of the GAN's.
        page.get_by_role("tab", name="Images").click()
        pick_model(page, "diffusers/tiny")
        expect(page.locator("#images-negative")).to_be_visible()
        expect(page.locator("#images-steps")).to_be_visible()
        expect(page.locator("#images-psi")).to_be_hidden()
        page.locator("#images-prompt textarea").fill("a red lighthouse")
        page.locator("#images-negative textarea").fill("blurry")
        for elem_id, value in (("images-n", 1), ("images-steps", 2), ("images-width", 48), ("images-height", 40),
                               ("images-seed", 9)):
            set_number(page, elem_id, value)
        page.locator("#images-generate").click()
        expect(page.locator("#images-status")).to_contain_text("1 image(s) from diffusers/tiny, seed 9")
        sd_png = history_pngs(server)[-1]
        with Image.open(sd_png) as im:
            assert im.size == (48, 40)

        # History lists the outputs; PNG info reads an image's settings back from the file.
        page.get_by_role("tab", name="History").click()
        expect(page.locator("#history-gallery img")).to_have_count(9)
        expect(page.locator("#history-copy")).to_contain_text("Reusable steel water bottle")
        drop = page.locator("#pnginfo-file input[type=file]")
        drop.set_input_files(str(gan_pngs[2]))
        info = page.locator("#pnginfo-text")
        expect(info).to_contain_text("Seed: 42")
        expect(info).to_contain_text("Model: shapes")
        expect(info).to_contain_text("Class: Flags")
        page.screenshot(path=str(tmp_path / "4-pnginfo.png"), full_page=True)

        # Re-run the diffusers image: every control, its size included, comes back, and so do its pixels.
        page.locator("#pnginfo-file button[aria-label='Clear']").first.click()
        expect(info).to_have_text("")                          # clearing the drop is no error
        expect(page.get_by_text("Error", exact=True)).to_have_count(0)
        drop.set_input_files(str(sd_png))
        expect(info).to_contain_text("a red lighthouse")
        expect(info).to_contain_text("Size: 48x40")
        page.locator("#pnginfo-rerun").click()
        expect(page.locator("#images-width input")).to_have_value("48")
        expect(page.locator("#images-height input")).to_have_value("40")
        expect(page.locator("#images-negative textarea")).to_have_value("blurry")
        expect(page.locator("#images-seed input")).to_have_value("9")
        page.locator("#images-generate").click()
        expect(page.locator("#images-gallery img")).to_have_count(1)
        deadline = time.monotonic() + 60
        while len(history_pngs(server)) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        page.screenshot(path=str(tmp_path / "5-rerun.png"), full_page=True)

        # A Korean browser gets the Korean labels (Gradio's i18n; its Settings panel switches).
        ko = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="ko-KR").new_page()
        ko.goto(server.url + "/")
        ko.get_by_role("tab", name="카피").click()
        expect(ko.get_by_text("브리프", exact=True)).to_be_visible()
        expect(ko.get_by_text("숙고: 초안, 검사, 선택", exact=True)).to_be_visible()
        ko.screenshot(path=str(tmp_path / "6-korean.png"), full_page=True)
        browser.close()
    again = history_pngs(server)[-1]
    with Image.open(again) as a, Image.open(sd_png) as b:
        assert again != sd_png and a.tobytes() == b.tobytes()
    assert all((tmp_path / f).stat().st_size > 10_000
               for f in ("1-images.png", "2-checker.png", "3-copy.png", "4-pnginfo.png", "5-rerun.png",
                         "6-korean.png"))
