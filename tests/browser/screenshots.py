"""Regenerate the page's screenshots in docs/screenshots/, one per view, against a server on the bundled store.

    python tests/browser/screenshots.py

Uses the same headless Chromium, cut off from every host but loopback, as the browser tests.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: harness, support
sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser import Outside, choose_sample, chromium, open_page  # noqa: E402
from harness import REPO, running_server  # noqa: E402
from playwright.sync_api import Page  # noqa: E402

OUT = REPO / "docs" / "screenshots"


def shoot(page: Page, name: str, selector: str | None = None) -> None:
    """The view down to the trade-off plot (which has its own shot), or the element `selector`."""
    path = OUT / f"{name}.png"
    plot = page.locator("#tradeoffs")
    if selector is not None:
        page.locator(selector).screenshot(path=str(path))
    elif plot.count():
        above = (plot.bounding_box() or {"y": 1000})["y"] - 60
        page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": above})
    else:
        page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(REPO)}")


def run(page: Page, task: str, answer: str) -> None:
    page.check(f"input[name=task][value={task}]")
    page.click("#run")
    page.locator(answer).first.wait_for(state="attached")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    outside = Outside()
    with tempfile.TemporaryDirectory() as workdir, running_server(Path(workdir), {}) as server, chromium() as browser:
        page = open_page(browser, server.url, None, outside)
        choose_sample(page, "parrot.jpg")
        page.click("#run-all")
        page.locator("#comparison-table tbody tr").nth(7).wait_for()
        shoot(page, "classify")
        shoot(page, "tradeoffs", "section:has(#tradeoffs)")
        page.select_option("#model", "auto")
        run(page, "classify", ".selection")
        shoot(page, "auto")
        choose_sample(page, "pets.jpg")
        run(page, "detect", "#boxes g.detection")
        shoot(page, "detect")
        run(page, "segment", "#mask-overlay:not([hidden])")
        shoot(page, "segment")
        choose_sample(page, "parrot.jpg")
        page.check("input[name=task][value=embed]")
        page.select_option("#second-sample", "owl.jpg")
        run(page, "embed", "#similarity")
        shoot(page, "embed")
        page.goto(server.url + "/docs")
        page.locator(".opblock").first.wait_for()
        shoot(page, "docs")
    if outside.requests or outside.errors:
        raise SystemExit(f"the page reached beyond loopback or failed: {outside}")


if __name__ == "__main__":
    main()
