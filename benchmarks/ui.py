"""The web page in a real browser; writes benchmarks/results/ui.json and the screenshots in docs/.

    .venv/bin/python benchmarks/ui.py --models artifacts [--loads 20] [--queries 30] [--seeds 3]

Serves the API (`semhash serve`, one process, SQLite) with the model bundles in --models and the
20 Newsgroups training split (11,314 documents) indexed into `news`, and drives Debian's Chromium
with Playwright:

* page_interactive_ms: navigation start to the page being usable (collections listed, search box
  enabled: the page's `interactive` performance mark), median over --loads loads, each in a fresh
  browser context (empty cache).
* search_to_results_ms: pressing Enter in the search box to the results, snippets included, being on
  screen (the page's `search-start` and `search-rendered` marks), median over --queries short queries
  (the subject lines of the 20 Newsgroups test split), with the API's default options (100 results).
* drawn_digits / drawn_digits_correct: digits 0-9 drawn with the mouse on the canvas along generated
  pen strokes (tests/ui/strokes.py, --seeds hands each), recognised by the page's fine-tuned DBN
  (the other recognisers' counts too).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "ui"))

from served import SEMHASH, link_models, server  # noqa: E402  (benchmarks/, beside this script)
from strokes import digit_strokes, draw_on  # noqa: E402

from service.migrate import upgrade_to_head  # noqa: E402

CHROMIUM = Path(os.environ.get("SEMHASH_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_MS = 60_000
KINDS = ("text", "digits", "images", "motor", "sparse")


def subject_queries(path: Path, n: int) -> list[str]:
    """Subject lines of the 20 Newsgroups test split ("Re:" dropped), as short queries people type."""
    queries = []
    with gzip.open(path, "rt") as lines:
        for line in lines:
            match = re.search(r"^Subject:\s*(?:Re:\s*)*(.+)$", json.loads(line)["text"], re.MULTILINE | re.I)
            words = match.group(1).split() if match else []
            if 2 <= len(words) <= 8:
                queries.append(" ".join(words))
            if len(queries) == n:
                break
    return queries


def mark_ms(page: Any, name: str) -> float:
    return page.evaluate(f"performance.getEntriesByName('{name}')[0].startTime")


def measure_loads(browser: Any, url: str, loads: int) -> list[float]:
    timings = []
    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT_MS)
        timings.append(mark_ms(page, "interactive"))
        context.close()
    return timings


def measure_searches(page: Any, queries: list[str]) -> list[float]:
    timings = []
    for query in queries:
        page.fill("#query", query)
        page.press("#query", "Enter")
        page.wait_for_selector("#results[data-state=done], #results[data-state=error]", timeout=TIMEOUT_MS)
        if page.get_attribute("#results", "data-state") == "error":
            continue  # e.g. a subject with no word the model or the lexical index knows: said on the page
        timings.append(mark_ms(page, "search-rendered") - mark_ms(page, "search-start"))
    return timings


def draw_digits(page: Any, seeds: int, shots: Path | None) -> dict[str, Any]:
    correct: dict[str, int] = {}
    misses = []
    pad = page.locator("#pad")
    for seed in range(seeds):
        for digit in range(10):
            page.click("#pad-clear")
            draw_on(page, pad, digit_strokes(digit, seed))
            page.wait_for_selector("#answers[data-state=final]", timeout=TIMEOUT_MS)
            for block in page.locator("#answers .answer:not(.unavailable)").all():
                name = block.get_attribute("data-recognizer")
                answer = int(block.locator("output.digit").get_attribute("data-digit"))
                correct[name] = correct.get(name, 0) + (answer == digit)
                if answer != digit:
                    misses.append({"recognizer": name, "drawn": digit, "seed": seed, "answer": answer})
            if shots is not None and seed == 0 and digit == 4:
                page.locator("#draw").screenshot(path=str(shots / "ui-draw.png"))
    return {"correct": correct, "drawn": 10 * seeds, "misses": misses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", type=Path, default=REPO / "artifacts", help="Folder with text/, digits/, ..."
    )
    parser.add_argument("--news", type=Path, default=REPO.parent / "shared" / "data" / "20news")
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3, help="Hands per digit (10 digits each).")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ui.json")
    parser.add_argument("--screenshots", type=Path, default=REPO / "docs", help="'' to skip them.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    shots = args.screenshots if str(args.screenshots) else None
    work = Path(tempfile.mkdtemp(prefix="semhash-ui-"))
    present = {kind: args.models / kind for kind in KINDS if (args.models / kind / "config.json").exists()}
    models = link_models(work / "models", present)
    database = f"sqlite:///{work}/semhash.db"
    upgrade_to_head(database)
    environment = {"SEMHASH_MODELS_DIR": str(models), "SEMHASH_DATABASE_URL": database}
    started = time.perf_counter()
    subprocess.run(
        [
            SEMHASH,
            "index",
            "--collection",
            "news",
            "--input",
            str(args.news / "train.jsonl.gz"),
            "--workers",
            "0",
        ],
        env={**os.environ, **environment},
        check=True,
    )
    index_seconds = time.perf_counter() - started
    try:
        with server(env=environment, stdout=None, stderr=None) as running:
            url = running.base
            with urllib.request.urlopen(f"{url}/v1/collections/news") as response:
                documents = json.load(response)["document_count"]
            with urllib.request.urlopen(f"{url}/v1/models") as response:
                bundles = {model["kind"]: model["bundle_id"] for model in json.load(response)["data"]}
            loaded = sorted(bundles)
            queries = subject_queries(args.news / "test.jsonl.gz", args.queries)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
                measure_loads(browser, url, 2)  # warm the server's first-request paths
                loads = measure_loads(browser, url, args.loads)
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(url)
                page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT_MS)
                measure_searches(page, queries[:3])  # warm-up
                searches = measure_searches(page, queries)
                if shots is not None:
                    shots.mkdir(parents=True, exist_ok=True)
                    page.fill("#query", "encryption key escrow privacy")
                    page.press("#query", "Enter")
                    page.wait_for_selector("#results[data-state=done]", timeout=TIMEOUT_MS)
                    page.screenshot(path=str(shots / "ui-search.png"))
                    page.click("#map-button")
                    page.wait_for_selector("#map[data-points]", timeout=TIMEOUT_MS)
                    page.press("#query", "Enter")
                    page.wait_for_selector("#map[data-query=shown]", timeout=TIMEOUT_MS)
                    page.locator("#codespace").screenshot(path=str(shots / "ui-codespace.png"))
                drawn = draw_digits(page, args.seeds, shots) if "digits" in loaded else None
                version = browser.version
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "page_interactive_ms": round(statistics.median(loads), 1),
        "page_interactive_ms_p90": round(sorted(loads)[int(0.9 * (len(loads) - 1))], 1),
        "search_to_results_ms": round(statistics.median(searches), 1),
        "search_to_results_ms_p90": round(sorted(searches)[int(0.9 * (len(searches) - 1))], 1),
        "searches": len(searches),
        "drawn_digits": drawn["drawn"] if drawn else 0,
        "drawn_digits_correct": drawn["correct"].get("finetuned", 0) if drawn else 0,
        "drawn_digits_correct_by_recognizer": drawn["correct"] if drawn else {},
        "drawn_digits_misses": drawn["misses"] if drawn else [],
        "browser": f"Chromium {version} (headless, Debian package, Playwright {playwright_version()})",
        "collection_documents": documents,
        "models_loaded": loaded,
        "bundles": bundles,
        "index_seconds": round(index_seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "command": " ".join(["benchmarks/ui.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def playwright_version() -> str:
    from importlib.metadata import version

    return version("playwright")


if __name__ == "__main__":
    main()
