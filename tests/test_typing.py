"""`mypy --strict` over the packages whose annotations are complete (settings: [tool.mypy] in pyproject.toml).

A package joins STRICT_PACKAGES once it checks clean, and then stays clean: a change that breaks its
types fails here, before it reaches a reader who trusts the annotations.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRICT_PACKAGES = ("models", "bundles", "training", "service")


def test_packages_type_check_under_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *STRICT_PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
