"""Print the project's dependencies for one image: `python deploy/requirements.py serving|training`.

Reads pyproject.toml (from the current folder). The serving image (API, migrate, bulk indexer) runs the
models with numpy, so it leaves out what only training needs; tests/test_deployment.py checks that the
service imports without these packages.
"""

from __future__ import annotations

import re
import sys
import tomllib

# Distribution names only `semhash train` / `semhash evaluate` import (torch comes from the CPU index).
TRAINING_ONLY = ("torch", "matplotlib")


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def dependencies(target: str, pyproject: str = "pyproject.toml") -> list[str]:
    with open(pyproject, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    if target == "serving":
        return [d for d in deps if requirement_name(d) not in TRAINING_ONLY]
    if target == "training":
        # torch is installed on its own, from the CPU-only index.
        return [d for d in deps if requirement_name(d) != "torch"]
    raise SystemExit(f"usage: {sys.argv[0]} serving|training")


if __name__ == "__main__":
    sys.stdout.write("".join(f"{d}\n" for d in dependencies(sys.argv[1] if len(sys.argv) > 1 else "")))
