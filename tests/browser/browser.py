"""Headless Chromium (Debian's package) driven by Playwright, cut off from every host but loopback.

`--host-resolver-rules` makes every name but 127.0.0.1 unresolvable, so the page runs as on a machine
with no network; `Outside` records any request that still tries to leave, and the tests assert there was
none (a request the page's Content-Security-Policy stopped in the browser never left it, and is allowed).
The tests and `screenshots.py` share this module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Request, sync_playwright

CHROMIUM = Path(os.environ.get("MOBILENET_TEST_CHROMIUM", "/usr/bin/chromium"))
INSTALL_HINT = "the browser tests need Debian's chromium: `apt-get install chromium` (.ci/run installs it)"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}
VIEWPORT = {"width": 1280, "height": 1000}


def chromium_path() -> Path | None:
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        raise FileNotFoundError(INSTALL_HINT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Outside:
    """Requests a page made to any host but loopback, and the page's script errors."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("requestfinished", self._record)
        page.on("requestfailed", self._record)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _record(self, request: Request) -> None:
        address = urlsplit(request.url)
        if address.hostname in LOOPBACK_HOSTS or address.scheme in ("data", "blob"):
            return
        if request.failure == "csp":  # stopped by the page's policy before it left the browser
            return
        self.requests.append(f"{request.url} ({request.failure or 'sent'})")


def open_page(
    browser: Browser, url: str, api_key: str | None, outside: Outside, until: str = "body[data-ready=true]"
) -> Page:
    """The page at `url`, with the API key entered once in its form, once `until` is there (the models listed)."""
    page = browser.new_page(viewport=VIEWPORT)
    outside.watch(page)
    page.goto(url + "/")
    if api_key is not None:
        page.fill("#api-key", api_key)
        page.click("#key-form button[type=submit]")
    page.locator(until).wait_for(state="attached")
    return page


def choose_sample(page: Page, name: str) -> None:
    """Click a sample photo in the gallery and wait until the page shows it."""
    page.click(f"#gallery button[data-sample='{name}']")
    page.locator("#preview-image[src^='blob:']").wait_for()


def run_and_wait(page: Page, selector: str) -> None:
    """Press Run and wait for `selector` (the answer) or for the error box, whichever comes."""
    page.click("#run")
    page.locator(f"{selector}, #error:not([hidden])").first.wait_for(state="attached")
