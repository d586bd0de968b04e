"""A server with an API key and a small body limit, and a headless Chromium to open its page with."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser import INSTALL_HINT, Outside, chromium, chromium_path, open_page
from harness import ServerProcess, running_server
from playwright.sync_api import Browser, Page
from support import DEEPLAB, FACE_SHORT, SELFIE, TV_FP32, TV_INT8, V1_SMALL, require_tool

API_KEY = "page-test-key"
MAX_BODY_BYTES = 2 * 1024 * 1024
PAGE_CONFIG = {
    "models": [TV_INT8, TV_FP32, V1_SMALL, DEEPLAB, FACE_SHORT, SELFIE],
    "api_key": API_KEY,
    "max_body_bytes": MAX_BODY_BYTES,
    "intra_op_threads": 2,
}


@pytest.fixture(scope="session")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("page-server"), PAGE_CONFIG) as process:
        yield process


# One per module: Playwright's sync API keeps an event loop running in this thread while the browser is open,
# which would make asyncio.run() fail in the tests of other folders that run after these.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_tool(chromium_path(), INSTALL_HINT)
    with chromium() as launched:
        yield launched


@pytest.fixture()
def outside() -> Iterator[Outside]:
    watched = Outside()
    yield watched
    assert watched.requests == [], f"the page reached beyond loopback: {watched.requests}"
    assert watched.errors == [], f"the page's scripts failed: {watched.errors}"


@pytest.fixture()
def page(browser: Browser, page_server: ServerProcess, outside: Outside) -> Iterator[Page]:
    opened = open_page(browser, page_server.url, API_KEY, outside)
    yield opened
    opened.close()
