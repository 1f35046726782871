"""The web page in Chromium: search, "more like this", the code map, drawing a digit, image search, keys.

Every wait is on a state the page reaches (Playwright's auto-waiting `expect`), never on a duration.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from page_helpers import TIMEOUT_MS, screenshot
from PIL import Image
from strokes import digit_strokes, draw_on

from training.mnist import MnistSplits

pytest.importorskip("playwright", reason="the `playwright` package is not installed")
from playwright.sync_api import expect  # noqa: E402

expect.set_options(timeout=TIMEOUT_MS)


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def api_search(url: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/collections/notes/search", json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def shown_results(page: Any) -> list[dict[str, Any]]:
    expect(page.locator("#results")).to_have_attribute("data-state", "done")
    return page.eval_on_selector_all(
        "#results > li",
        """items => items.map(li => ({
            id: li.dataset.id,
            distance: li.querySelector('.distance').textContent,
            score: li.querySelector('.score').textContent,
            snippet: li.querySelector('.snippet').textContent,
            marks: [...li.querySelectorAll('.snippet mark')].map(m => m.textContent.toLowerCase()),
            meta: li.querySelector('.meta').textContent,
        }))""",
    )


def search_for(page: Any, text: str) -> list[dict[str, Any]]:
    page.fill("#query", text)
    page.press("#query", "Enter")
    return shown_results(page)


def assert_same(shown: list[dict[str, Any]], api: dict[str, Any], page_size: int = 20) -> None:
    """The results on screen are the API's, a page of them at a time."""
    expected = api["data"][: max(page_size, len(shown))]
    assert len(shown) == min(len(api["data"]), page_size) or len(shown) == len(expected)
    assert [item["id"] for item in shown] == [hit["id"] for hit in expected]
    for item, hit in zip(shown, expected, strict=True):
        assert item["distance"] == str(hit["distance"])
        assert float(item["score"]) == pytest.approx(hit["score"], abs=1e-4)


def test_search_shows_the_apis_results_with_snippets(page: Any, server_url: str) -> None:
    open_page(page, server_url)
    expect(page.locator("#collection")).to_have_value("notes")
    shown = search_for(page, "rocket orbit")
    api = api_search(server_url, text="rocket orbit")
    assert api["count"] > 20
    assert_same(shown, api)
    expect(page.locator("#search-range")).to_have_text(f"Showing 1–20 of {api['count']}.")
    page.click("#results-more")  # the next page of the same answer, with its snippets
    expect(page.locator("#results > li")).to_have_count(min(40, api["count"]))
    expect(page.locator("#results > li .snippet").last).not_to_have_text("…")
    assert_same(shown_results(page), api, page_size=40)
    top = shown[:10]
    assert all(item["meta"] == "label: space" for item in top)
    assert all(set(item["marks"]) <= {"rocket", "orbit"} and item["marks"] for item in top)
    summary = page.locator("#search-summary")
    expect(summary).to_contain_text("Results for “rocket orbit”")
    expect(summary).to_contain_text("rerank fused")
    expect(summary).to_contain_text("addresses probed")
    measured = page.evaluate("performance.getEntriesByName('search-rendered').length")
    assert measured == 1
    screenshot(page, "search")


def test_more_like_this_searches_by_example(page: Any, server_url: str) -> None:
    open_page(page, server_url)
    first = search_for(page, "goalie puck")[0]
    page.locator("#results > li").first.get_by_role("button", name=f"More like {first['id']}").click()
    expect(page.locator("#search-summary")).to_contain_text(f"Documents like “{first['id']}”")
    shown = shown_results(page)
    assert_same(shown, api_search(server_url, document_id=first["id"]))
    assert first["id"] not in [item["id"] for item in shown]
    assert all(item["meta"] == "label: hockey" for item in shown[:10])


def test_advanced_options_show_the_api_defaults_and_its_errors(page: Any, server_url: str) -> None:
    open_page(page, server_url)
    page.click("#advanced summary")
    schema = httpx.get(f"{server_url}/openapi.json").json()["components"]["schemas"]["SearchRequest"]
    limit = str(schema["properties"]["limit"]["default"])
    expect(page.locator("#opt-limit")).to_have_attribute("placeholder", limit)
    for name in ("probes", "lexical_candidates"):  # defaults said in the description ("Default: 300.")
        default = re.search(r"Default: ([0-9]+)\.", schema["properties"][name]["description"]).group(1)
        expect(page.locator(f"#opt-{name}")).to_have_attribute("placeholder", default)
    expect(page.locator("#opt-radius")).to_have_attribute("placeholder", "auto")  # depends on the query
    assert page.eval_on_selector_all("#opt-rerank option", "o => o.map(x => x.value)") == [
        "",
        "fused",
        "bm25",
        "hamming",
        "tfidf",
        "none",
    ]
    page.fill("#opt-limit", "3")
    page.select_option("#opt-rerank", "hamming")
    shown = search_for(page, "garlic butter")
    assert_same(shown, api_search(server_url, text="garlic butter", limit=3, rerank="hamming"))
    expect(page.locator("#search-summary")).to_contain_text("rerank hamming")
    page.fill("#opt-radius", "99")  # over the server's maximum: the API's 422, said plainly
    page.press("#query", "Enter")
    expect(page.locator("#search-error")).to_have_text("Invalid input: radius must be at most 4")
    expect(page.locator("#results")).to_have_attribute("data-state", "error")


def test_code_space_map_marks_the_query_and_shows_a_document_on_hover(page: Any, server_url: str) -> None:
    open_page(page, server_url)
    page.click("#map-button")
    expect(page.locator("#map")).to_have_attribute("data-points", "200")
    expect(page.locator("#map-status")).to_have_text("200 of 200 documents shown.")
    expect(page.locator("#map-legend li")).to_have_count(4)
    expect(page.locator("#map-field")).to_have_value("label")
    search_for(page, "doctor patient")
    expect(page.locator("#map")).to_have_attribute("data-query", "shown")
    points = page.evaluate("import('/static/codemap.js').then(m => m.pointsOnCanvas())")
    assert len(points) == 200
    page.locator("#map").scroll_into_view_if_needed()
    box = page.locator("#map").bounding_box()
    point = points[17]
    page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])
    tip = page.locator("#map-tip")
    expect(tip).to_be_visible()
    hovered = tip.get_attribute("data-id")
    expect(tip).to_contain_text("Click: more like this")  # the snippet arrived
    screenshot(page, "codespace")
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    expect(page.locator("#search-summary")).to_contain_text(f"Documents like “{hovered}”")


def page_pixels(page: Any) -> list[list[float]]:
    return page.evaluate("import('/static/draw.js').then(m => m.pixels())")


def recognised(page: Any) -> dict[str, int]:
    expect(page.locator("#answers")).to_have_attribute("data-state", "final")
    return {
        block.get_attribute("data-recognizer"): int(block.locator("output.digit").get_attribute("data-digit"))
        for block in page.locator("#answers .answer:not(.unavailable)").all()
    }


def test_drawing_a_digit_shows_each_recognisers_answer(page: Any, server_url: str) -> None:
    open_page(page, server_url)
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()
    draw_on(page, pad, digit_strokes(7, seed=0))
    answers = recognised(page)
    assert set(answers) == {"finetuned", "generative", "motor"}
    # What the page shows is the API's answer for the pixels it drew.
    pixels = page_pixels(page)
    assert np.asarray(pixels).shape == (56, 56) and np.asarray(pixels).max() == 1.0
    for variant in ("finetuned", "generative"):
        api = httpx.post(
            f"{server_url}/v1/digits/recognize",
            params={"variant": variant},
            json={"pixels": pixels},
            timeout=60,
        ).json()["data"][0]
        assert answers[variant] == api["digit"]
        bars = page.locator(f'[data-recognizer="{variant}"] .bars li')
        expect(bars).to_have_count(10)
        best = f"{api['digit']}: {api['probabilities'][api['digit']] * 100:.1f}%"
        expect(bars.nth(api["digit"])).to_have_text(best)
    expect(page.locator("#recon-figure")).to_be_visible()
    expect(page.locator("#pen")).to_have_attribute("data-points", re.compile(r"^[1-9][0-9]*$"))  # pen path
    screenshot(page, "draw")
    page.click("#pad-clear")
    expect(page.locator("#answers .answer")).to_have_count(0)
    expect(page.locator("#draw-status")).to_have_text("Nothing drawn yet.")


def test_draw_an_example_from_the_motor_model(page: Any, server_url: str) -> None:
    open_page(page, server_url)
    page.select_option("#pad-example-digit", "3")
    page.click("#pad-example")
    answers = recognised(page)
    assert set(answers) == {"finetuned", "generative", "motor"}


def png_of(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((image.reshape(28, 28) * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_image_upload_encodes_and_finds_the_nearest_images(
    page: Any, start_server: Callable[..., str], mnist_splits: MnistSplits
) -> None:
    url = start_server()
    images = [
        {
            "id": f"test/{i}",
            "pixels": mnist_splits.test_x[i].reshape(28, 28).tolist(),
            "metadata": {"label": int(y)},
        }
        for i, y in enumerate(mnist_splits.test_y[:60])
    ]
    httpx.post(f"{url}/v1/images/collections", json={"name": "digits"}).raise_for_status()
    httpx.post(
        f"{url}/v1/images/collections/digits/images", json={"images": images}, timeout=60
    ).raise_for_status()
    open_page(page, url)
    expect(page.locator("#image-collection")).to_have_value("digits")
    query = png_of(mnist_splits.test_x[70])
    page.set_input_files(
        "#upload-file", files=[{"name": "digit.png", "mimeType": "image/png", "buffer": query}]
    )
    page.click("#upload-button")
    expect(page.locator("#image-results")).to_have_attribute("data-state", "done")
    expect(page.locator("#upload-recon-figure")).to_be_visible()
    api = httpx.post(
        f"{url}/v1/images/collections/digits/search", params={"limit": 10}, files={"file": ("d.png", query)}
    ).json()
    shown = page.eval_on_selector_all("#image-results > li", "items => items.map(li => li.dataset.id)")
    assert shown == [hit["id"] for hit in api["data"]] and shown
    expect(page.locator("#image-results > li").first).to_contain_text("label: ")
    recon = page.get_attribute("#upload-recon", "src")
    assert Image.open(io.BytesIO(base64.b64decode(recon.split(",")[1]))).size == (28, 28)
    screenshot(page, "image-search")
    # A file that is no image: the API's message, not a broken page.
    page.set_input_files(
        "#upload-file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"no image"}]
    )
    page.click("#upload-button")
    expect(page.locator("#upload-error")).to_contain_text("Invalid input")


def test_a_server_with_a_key_asks_for_it(page: Any, start_server: Callable[..., str]) -> None:
    key = "page-test-key-0123456789"
    url = start_server(api_key=key, read_requires_key=True)
    page.goto(url)
    expect(page.locator("#key-panel")).to_have_attribute("open", "")
    expect(page.locator("#key-status")).to_contain_text("This server needs an API key")
    expect(page.locator("#api-key")).to_be_focused()
    page.fill("#api-key", "wrong-key-0123456789")
    with page.expect_response(lambda response: response.url.endswith("/v1/overview")) as answer:
        page.press("#api-key", "Enter")
    assert answer.value.status == 401
    expect(page.locator("#key-status")).to_contain_text("a valid X-API-Key header is required")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    shown = search_for(page, "recipe oven")
    response = httpx.post(
        f"{url}/v1/collections/notes/search", json={"text": "recipe oven"}, headers={"X-API-Key": key}
    )
    assert_same(shown, response.json())
    # Kept in the tab's session storage only: a new tab of the same browser context does not have it.
    assert page.evaluate("sessionStorage.getItem('semhash.apiKey')") == key
    assert page.evaluate("localStorage.length") == 0
    other = page.context.new_page()
    other.goto(url)
    expect(other.locator("#key-status")).to_contain_text("This server needs an API key")


def test_without_vision_models_the_page_says_why(
    page: Any, start_server: Callable[..., str], page_models: Path, tmp_path: Path
) -> None:
    (tmp_path / "text").symlink_to(page_models / "text")
    url = start_server(models_dir=tmp_path)
    open_page(page, url)
    expect(page.locator("#draw-status")).to_have_text("This server has no digits model loaded.")
    expect(page.locator("#pad-example")).to_be_disabled()
    draw_on(page, page.locator("#pad"), digit_strokes(1))
    expect(page.locator("#answers")).to_have_attribute("data-state", "final")
    expect(page.locator("#draw-error")).to_contain_text("Not available: the digits model is not available")


def test_phone_screen_and_keyboard(browser: Any, server_url: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        open_page(page, server_url)
        # Nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # Keyboard only: tab to the query, type, Enter; tab on to a result's button and press it.
        for _ in range(30):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "query":
                break
        assert page.evaluate("document.activeElement.id") == "query"
        page.keyboard.type("satellite launch")
        page.keyboard.press("Enter")
        first = shown_results(page)[0]["id"]
        page.locator("#results .more").first.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#search-summary")).to_contain_text(f"Documents like “{first}”")
        screenshot(page, "phone")
        # A finger draws too (touch events become pointer events).
        pad = page.locator("#pad")
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        expect(page.locator("#answers")).to_have_attribute("data-state", "final")
    finally:
        context.close()
