"""Browser tests of the web page: a real uvicorn server on a free port, Chromium driven by Playwright.

The server runs the app on a fresh SQLite database with tiny bundles really trained here (text on a
generated corpus of four topics, digits/images/motor/sparse on scikit-learn's digits). Chromium is
Debian's (`apt-get install chromium`), found at $SEMHASH_CHROMIUM or /usr/bin/chromium; without it, or
without the `playwright` package, the tests skip and say why, unless SEMHASH_REQUIRE_BROWSER=1 (CI),
where they fail. Screenshots go to $SEMHASH_UI_ARTIFACTS (default: test-artifacts/ui).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from page_helpers import TIMEOUT_MS, screenshot

from service.main import create_app
from service.migrate import upgrade_to_head
from service.settings import Settings
from training.corpus import Corpus
from training.text_train import train_text_bundle

CHROMIUM = Path(os.environ.get("SEMHASH_CHROMIUM", "/usr/bin/chromium"))

TOPICS = {
    "space": "rocket orbit launch satellite nasa moon shuttle astronaut mission planet solar lunar",
    "hockey": "puck goalie season playoff team score skate rink league coach period penalty",
    "medicine": "doctor patient disease treatment symptom clinical drug dose therapy infection virus",
    "cooking": "recipe oven garlic butter flour sauce bake onion pepper simmer dough roast",
}
FILLER = "the a of and to in is that it for on with as was this be are".split()


def unavailable(reason: str) -> None:
    if os.environ.get("SEMHASH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SEMHASH_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def page_corpus() -> Corpus:
    """200 short documents, 50 per topic, each of 40 words: its topic's words among common ones."""
    rng = np.random.default_rng(7)
    ids, texts, labels = [], [], []
    for topic, words in TOPICS.items():
        vocabulary = words.split()
        for j in range(50):
            picked = [
                str(rng.choice(vocabulary)) if rng.random() < 0.6 else str(rng.choice(FILLER))
                for _ in range(40)
            ]
            ids.append(f"{topic}/{j}")
            texts.append(" ".join(picked).capitalize() + ".")
            labels.append(topic)
    return Corpus(ids, texts, labels, "page")


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return page_corpus()


@pytest.fixture(scope="session")
def page_models(
    tmp_path_factory: pytest.TempPathFactory,
    corpus: Corpus,
    digits_run: tuple[Path, Any],
    images_run: tuple[Path, Any],
    motor_run: tuple[Path, Any],
    sparse_run: tuple[Path, Any],
) -> Path:
    """A models folder: a tiny text bundle trained on `corpus`, and the tiny vision bundles."""
    root = tmp_path_factory.mktemp("page-models")
    train_text_bundle(corpus, root / "text", profile="tiny", address_bits=16, long_bits=64, seed=0)
    for kind, (path, _) in {"digits": digits_run, "images": images_run, "motor": motor_run}.items():
        shutil.copytree(path, root / kind)
    shutil.copytree(sparse_run[0], root / "sparse")
    return root


class Server:
    """uvicorn serving the app in a thread, on a socket bound to a free port."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:  # startup loads models and builds indexes
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="session")
def start_server(
    tmp_path_factory: pytest.TempPathFactory, page_models: Path, corpus: Corpus
) -> Iterator[Callable[..., str]]:
    """Start a server with `corpus` in collection `notes` (settings overridable); returns its URL."""
    servers: list[Server] = []

    def start(**overrides: Any) -> str:
        url = f"sqlite:///{tmp_path_factory.mktemp('page-db')}/semhash.db"
        upgrade_to_head(url)
        settings = Settings(
            **{"database_url": url, "models_dir": page_models, "index_poll_seconds": 0.2, **overrides}
        )
        server = Server(settings).__enter__()
        servers.append(server)
        headers = {"X-API-Key": settings.api_key} if settings.api_key else {}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            client.post("/v1/collections", json={"name": "notes"}).raise_for_status()
            documents = [
                {"id": i, "text": t, "metadata": {"label": label}}
                for i, t, label in zip(corpus.ids, corpus.texts, corpus.labels, strict=True)
            ]
            client.post("/v1/collections/notes/documents", json={"documents": documents}).raise_for_status()
        return server.url

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def server_url(start_server: Callable[..., str]) -> str:
    return start_server()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the `playwright` package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SEMHASH_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page (own storage) at a desktop size; screenshot saved when the test fails."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    if getattr(request.node, "failed", False):
        screenshot(page, f"FAILED-{request.node.name}")
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.failed = True  # type: ignore[attr-defined]
    return report
