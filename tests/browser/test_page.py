"""The page at `/` in a real headless Chromium against a real server, used as a person would use it."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import numpy as np
from browser import Outside, choose_sample, open_page, run_and_wait
from conftest import API_KEY, MAX_BODY_BYTES
from harness import ServerProcess
from PIL import Image
from playwright.sync_api import Browser, Page, Request
from support import FACE_SHORT, IMAGES, SELFIE, TV_FP32, TV_INT8, V1_SMALL, image_bytes


def upload(page: Page, name: str) -> None:
    page.set_input_files("#file", str(IMAGES / name))


def choose_task(page: Page, task: str) -> None:
    page.check(f"input[name=task][value={task}]")


def bar_labels(page: Page) -> list[str]:
    return page.locator("ol.bars li .label").all_inner_texts()


def comparison_rows(page: Page) -> list[dict[str, str]]:
    rows = []
    for row in page.locator("#comparison-table tbody tr").all():
        cells = row.locator("th, td").all_inner_texts()
        rows.append(dict(zip(["model", "alpha", "rho", "mmacs", "top", "score", "server", "seen"], cells, strict=True)))
    return rows


def test_the_parrot_is_a_macaw_with_a_latency_breakdown(page: Page) -> None:
    upload(page, "parrot.jpg")
    run_and_wait(page, "ol.bars li")
    assert page.locator("#error").is_hidden()
    assert bar_labels(page)[0] == "macaw"
    assert page.locator("ol.bars li").count() == 5
    widths = page.locator("ol.bars .fill").evaluate_all("fills => fills.map(f => f.getBoundingClientRect().width)")
    assert widths[0] > 10 * widths[1] > 0, "the top bar is drawn in proportion to its score"
    # The breakdown comes from the answer's Server-Timing header: every stage has a figure.
    stages = dict(
        zip(
            page.locator(".timing dd").evaluate_all("dds => dds.map(d => d.dataset.stage)"),
            page.locator(".timing dd").all_inner_texts(),
            strict=True,
        )
    )
    assert {"queue", "preprocess", "inference", "total"} <= set(stages)
    assert float(stages["inference"].split()[0]) > 0
    assert float(stages["total"].split()[0]) >= float(stages["inference"].split()[0])


def test_a_smaller_variant_joins_the_comparison(page: Page) -> None:
    upload(page, "parrot.jpg")
    page.select_option("#model", TV_FP32)
    run_and_wait(page, "#comparison-table")
    first = comparison_rows(page)
    assert [(row["model"], row["alpha"], row["rho"]) for row in first] == [(TV_FP32, "1", "224")]

    page.select_option("#model", V1_SMALL)
    run_and_wait(page, f"#comparison-table tr[data-model='{V1_SMALL}']")
    page.select_option("#model", TV_FP32)
    page.select_option("#resolution", "160")
    run_and_wait(page, f"#comparison-table tr[data-model='{TV_FP32}'][data-resolution='160']")
    rows = {(row["model"], row["rho"]): row for row in comparison_rows(page)}
    assert set(rows) == {(TV_FP32, "224"), (V1_SMALL, "128"), (TV_FP32, "160")}
    small = rows[(V1_SMALL, "128")]
    assert small["alpha"] == "0.25"
    assert int(small["mmacs"]) < int(rows[(TV_FP32, "160")]["mmacs"]) < int(rows[(TV_FP32, "224")]["mmacs"])
    # The last answer's bars are the last variant's; the table keeps every one for this image.
    assert page.locator("#result p").first.inner_text() == f"{TV_FP32} at 160px"
    assert rows[(V1_SMALL, "128")]["score"] != rows[(TV_FP32, "224")]["score"]


def test_detect_draws_the_two_dogs_in_the_pets_photo(page: Page) -> None:
    choose_sample(page, "pets.jpg")
    choose_task(page, "detect")
    run_and_wait(page, "#boxes g.detection")
    boxes = page.locator("#boxes g.detection")
    assert boxes.evaluate_all("gs => gs.map(g => g.dataset.label)") == ["dog", "dog"]
    drawn = boxes.locator("rect").evaluate_all(
        "rects => rects.map(r => { const b = r.getBoundingClientRect(); return [b.width, b.height]; })"
    )
    assert all(width > 40 and height > 40 for width, height in drawn), drawn
    assert page.locator("#boxes").get_attribute("aria-label") == "2 detections: dog, dog"


def test_segment_lays_the_mask_over_the_photo_with_a_legend(page: Page) -> None:
    choose_sample(page, "pets.jpg")
    choose_task(page, "segment")
    run_and_wait(page, "#mask-overlay:not([hidden])")
    overlay = page.locator("#mask-overlay")
    natural = overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == list(Image.open(io.BytesIO(image_bytes("pets.jpg"))).size)
    assert float(overlay.evaluate("img => getComputedStyle(img).opacity")) < 1
    assert page.locator(".legend li").evaluate_all("lis => lis.map(li => li.dataset.class)") == ["dog"]
    assert "dog" in (overlay.get_attribute("alt") or "")


def test_detect_with_the_face_detector_draws_faces_and_their_keypoints(page: Page) -> None:
    upload(page, "face.jpg")
    choose_task(page, "detect")
    page.select_option("#model", FACE_SHORT)
    run_and_wait(page, "#boxes g.detection")
    assert page.locator("#error").is_hidden()
    faces = page.locator("#boxes g.detection")
    assert faces.evaluate_all("gs => gs.map(g => g.dataset.label)") == ["face", "face"]
    assert page.locator("#boxes circle.keypoint").count() == 12
    assert "single-shot detector" in page.locator("#result p").first.inner_text()


def test_segment_with_the_selfie_model_shows_the_person(page: Page) -> None:
    upload(page, "face.jpg")
    choose_task(page, "segment")
    page.select_option("#model", SELFIE)
    run_and_wait(page, "#mask-overlay:not([hidden])")
    assert page.locator(".legend li").evaluate_all("lis => lis.map(li => li.dataset.class)") == ["person"]


def test_embed_shows_the_cosine_similarity_the_api_gives(page: Page, page_server: ServerProcess) -> None:
    upload(page, "parrot.jpg")
    choose_task(page, "embed")
    page.select_option("#second-sample", "cat_720p.jpg")
    run_and_wait(page, "#similarity")
    shown = float(page.inner_text("#similarity"))
    headers = {"X-API-Key": API_KEY, "Content-Type": "image/jpeg"}
    with page_server.client(headers=headers) as client:
        vectors = [
            np.array(client.post("/embed", content=image_bytes(name)).json()["results"][0]["embedding"])
            for name in ("parrot.jpg", "cat_720p.jpg")
        ]
    expected = float(vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1]))
    assert abs(shown - expected) < 1e-3


def test_auto_says_what_it_chose_and_why(page: Page) -> None:
    upload(page, "parrot.jpg")
    page.select_option("#model", "auto")
    assert page.locator("#resolution").is_hidden()
    page.fill("#budget", "50")
    run_and_wait(page, ".selection")
    text = page.inner_text(".selection")
    assert text.startswith("Chosen automatically:") and "budget of 50.0 ms" in text
    assert page.locator("#comparison-table tbody tr").count() == 1


def test_an_oversized_file_shows_the_api_s_own_message(page: Page, page_server: ServerProcess, tmp_path) -> None:
    big = tmp_path / "huge.jpg"
    big.write_bytes(image_bytes("parrot.jpg") * (MAX_BODY_BYTES // len(image_bytes("parrot.jpg")) + 1))
    with page_server.client(headers={"X-API-Key": API_KEY, "Content-Type": "image/jpeg"}) as client:
        refused = client.post("/classify", content=big.read_bytes())
    assert refused.status_code == 413
    page.set_input_files("#file", str(big))
    run_and_wait(page, "ol.bars li")
    assert page.inner_text("#error") == f"413: {refused.json()['error']['message']}"
    assert page.locator("ol.bars li").count() == 0


def test_a_file_that_is_no_image_shows_the_api_s_own_message(page: Page, tmp_path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not a picture\n" * 20)
    page.set_input_files("#file", str(fake))
    run_and_wait(page, "ol.bars li")
    message = page.inner_text("#error")
    assert message.startswith("400: ") and "image" in message


def test_an_unknown_model_shows_the_api_s_own_message(page: Page) -> None:
    upload(page, "parrot.jpg")
    # A model that was in the list when the page loaded, as after an unload; the page sends what is chosen.
    page.locator("#model").evaluate("s => s.add(new Option('gone_model', 'gone_model', true, true))")
    run_and_wait(page, "ol.bars li")
    assert page.inner_text("#error").startswith("404: model 'gone_model' is not in the model store")


def test_the_key_is_asked_for_once_and_sent_as_a_header_never_in_a_url(
    browser: Browser, page_server: ServerProcess, outside: Outside
) -> None:
    keyless = open_page(browser, page_server.url, None, outside, until="#error:not([hidden])")
    assert keyless.inner_text("#error").startswith("401: missing or wrong API key")
    assert keyless.evaluate("document.activeElement.id") == "api-key"
    keyless.close()

    page = open_page(browser, page_server.url, API_KEY, outside)
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    upload(page, "parrot.jpg")
    run_and_wait(page, "ol.bars li")
    page.reload()  # the key outlives a reload of the tab, so it is entered once
    page.locator("body[data-ready=true]").wait_for(state="attached")
    upload(page, "parrot.jpg")
    run_and_wait(page, "ol.bars li")
    assert bar_labels(page)[0] == "macaw"
    calls = [r for r in sent if urlsplit(r.url).path in ("/classify", "/v1/models", "/v1/tradeoffs")]
    assert len(calls) >= 4
    assert all(request.all_headers().get("x-api-key") == API_KEY for request in calls)
    assert all(API_KEY not in request.url for request in sent)
    page.close()


def test_usable_by_keyboard_alone(page: Page) -> None:
    # Listening turns on Playwright's interception of the file chooser; the focus call after it is a round trip
    # to the browser, so that the interception is on before Enter opens the chooser.
    page.on("filechooser", lambda chooser: chooser.set_files(str(IMAGES / "parrot.jpg")))
    page.focus("#drop")
    page.keyboard.press("Enter")
    page.locator("#preview-image[src^='blob:']").wait_for()
    page.focus("input[name=task][value=classify]")
    page.keyboard.press("ArrowRight")  # radio groups move with the arrow keys
    assert page.locator("input[name=task][value=detect]").is_checked()
    page.keyboard.press("ArrowLeft")
    page.focus("#run")
    page.keyboard.press("Enter")
    page.locator("ol.bars li").first.wait_for()
    assert bar_labels(page)[0] == "macaw"


def test_every_picture_has_a_text_alternative(page: Page) -> None:
    upload(page, "parrot.jpg")
    run_and_wait(page, "ol.bars li")
    images = page.locator("img:not([hidden])").evaluate_all("imgs => imgs.map(i => [i.src, i.getAttribute('alt')])")
    decorative = [src for src, alt in images if alt == "" and not src.endswith("favicon.svg")]
    assert not [src for src, alt in images if alt is None], "every img has an alt attribute"
    assert not decorative, f"only the logo is decorative: {decorative}"
    for chart in page.locator("svg[role=img]").all():
        assert chart.get_attribute("aria-label")
    assert page.locator("#tradeoffs svg circle.measured").count() >= 10


def test_the_trade_off_plot_marks_the_frontier(page: Page, page_server: ServerProcess) -> None:
    with page_server.client(headers={"X-API-Key": API_KEY}) as client:
        table = client.get("/v1/tradeoffs").json()
    measured = [p for p in table["points"] if p["top1"] is not None and p["latency_ms"] is not None]
    frontier = [p for p in measured if p["frontier"]]
    assert page.locator("#tradeoffs g.point").count() == len(measured)
    assert page.locator("#tradeoffs circle.on-frontier").count() == len(frontier)
    assert len(page.get_attribute("#tradeoffs polyline.frontier", "points").split()) == len(frontier)
    for point in frontier:
        label = page.locator(
            f"#tradeoffs g.point[data-model='{point['model']}'][data-resolution='{point['resolution']}'] text"
        )
        assert label.text_content() == f"α{point['alpha']:g} ρ{point['resolution']}"
    assert {p["model"] for p in measured} == {TV_INT8, TV_FP32, V1_SMALL}


def test_an_image_can_be_dropped_or_pasted(page: Page, page_server: ServerProcess) -> None:
    # A DataTransfer holding the owl, made in the page as a drag from the desktop or a copy would make it.
    make_transfer = """async () => {
        const blob = await (await fetch('/ui/samples/owl.jpg')).blob();
        const transfer = new DataTransfer();
        transfer.items.add(new File([blob], 'dropped-owl.jpg', { type: 'image/jpeg' }));
        return transfer;
    }"""
    page.dispatch_event("#drop", "drop", {"dataTransfer": page.evaluate_handle(make_transfer)})
    assert page.locator("#preview-caption").inner_text().startswith("dropped-owl.jpg")
    run_and_wait(page, "ol.bars li")
    with page_server.client(headers={"X-API-Key": API_KEY, "Content-Type": "image/jpeg"}) as client:
        answer = client.post("/classify", content=image_bytes("owl.jpg")).json()
    assert bar_labels(page)[0] == answer["results"][0]["predictions"][0]["label"]

    pasted = page.evaluate_handle(make_transfer)
    page.evaluate("t => document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: t }))", pasted)
    assert page.locator("#preview-caption").inner_text().startswith("dropped-owl.jpg")
    assert page.locator("#preview-image").get_attribute("alt") == "The image to run: pasted image"
