"""The page, the docs and the Server-Timing header over HTTP, on the shared server (no API key)."""

from __future__ import annotations

import re

import httpx
import pytest
from support import IMAGES

from service.web.routes import STATIC

SERVER_TIMING = re.compile(r'(\w+);dur=([0-9.]+);desc="[^"]*"')
# Any address a browser would fetch from elsewhere: the page and the docs must name none.
OUTSIDE_URL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def stages(response: httpx.Response) -> dict[str, float]:
    return {name: float(ms) for name, ms in SERVER_TIMING.findall(response.headers["server-timing"])}


@pytest.mark.parametrize("path", ["/classify", "/embed", "/detect", "/segment"])
def test_every_answer_says_where_its_time_went(client: httpx.Client, path: str) -> None:
    response = client.post(path, content=(IMAGES / "pets.jpg").read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    timing = stages(response)
    assert set(timing) == {"queue", "preprocess", "inference", "total"}
    assert timing["inference"] > 0 and timing["preprocess"] > 0
    assert timing["total"] >= timing["inference"] + timing["preprocess"] - 0.02


def test_a_batch_request_reports_its_longest_image(client: httpx.Client) -> None:
    files = [("file", ("a.jpg", (IMAGES / "parrot.jpg").read_bytes(), "image/jpeg"))] * 3
    timing = stages(client.post("/classify", files=files))
    assert 0 < timing["inference"] <= timing["total"]


def test_the_page_is_served_with_a_policy_that_keeps_it_on_this_server(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    for path in ("/docs", "/redoc"):
        assert "default-src 'self'" in client.get(path).headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_pages_name_no_outside_address(client: httpx.Client, path: str) -> None:
    html = client.get(path).text
    assert not OUTSIDE_URL.search(html), OUTSIDE_URL.search(html)


def test_every_page_module_is_served(client: httpx.Client) -> None:
    for module in sorted(STATIC.rglob("*.js")):
        response = client.get(f"/ui/{module.relative_to(STATIC)}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        for imported in re.findall(r'from "(\.[^"]+)"', response.text):
            assert (module.parent / imported).resolve().is_file(), f"{module.name} imports missing {imported}"


def test_page_files_are_not_counted_as_api_requests(client: httpx.Client) -> None:
    client.get("/ui/style.css")
    client.get("/")
    metrics = client.get("/metrics").text
    assert 'endpoint="/ui' not in metrics and 'endpoint="/"' not in metrics
