"""/docs and /redoc render the API from the package's own copies of Swagger UI and ReDoc, with no network."""

from __future__ import annotations

from browser import VIEWPORT, Outside
from conftest import API_KEY
from harness import ServerProcess
from playwright.sync_api import Browser


def test_swagger_ui_renders_every_operation_and_authorises_with_the_key(
    browser: Browser, page_server: ServerProcess, outside: Outside
) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    outside.watch(page)
    page.goto(page_server.url + "/docs")
    page.locator(".opblock").first.wait_for()
    paths = page.locator(".opblock-summary-path").evaluate_all("els => els.map(e => e.dataset.path)")
    assert {"/classify", "/embed", "/detect", "/segment", "/v1/models", "/v2/models/{name}/infer"} <= set(paths)
    # The document declares the key, so Swagger UI offers to send it; with it, "Try it out" gets a 200.
    page.click("button.authorize")
    api_key_form = page.locator(".auth-container").filter(has_text="X-API-Key")
    api_key_form.locator("input").fill(API_KEY)
    api_key_form.locator("button.authorize").click()
    page.locator("button.btn-done").first.click()
    page.click("#operations-default-list_models_v1_models_get .opblock-summary")
    page.click("#operations-default-list_models_v1_models_get button.try-out__btn")
    page.click("#operations-default-list_models_v1_models_get button.execute")
    status = page.locator(
        "#operations-default-list_models_v1_models_get .live-responses-table tbody .response-col_status"
    )
    status.first.wait_for()
    assert status.first.inner_text().strip() == "200"
    page.close()


def test_redoc_renders_the_operations(browser: Browser, page_server: ServerProcess, outside: Outside) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    outside.watch(page)
    page.goto(page_server.url + "/redoc")
    page.get_by_text("Top-k classes for each image").first.wait_for()
    assert page.get_by_text("The class mask as a PNG at the original size").count() >= 1
    assert page.locator("text=ApiKey").count() >= 1, "ReDoc lists the API-key scheme"
    page.close()
