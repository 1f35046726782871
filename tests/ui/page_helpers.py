"""Helpers of the browser tests (imported by conftest.py and the tests): timeouts and screenshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SEMHASH_UI_ARTIFACTS", REPO / "test-artifacts" / "ui"))
TIMEOUT_MS = 30_000  # generous: the tests wait for states the page reaches, never for durations


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save a screenshot of `page` as ARTIFACTS/name.png (kept as a test artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
