"""Results files that several benchmark scripts write parts of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_results(path: Path) -> dict[str, Any]:
    """The JSON object at `path`, or {} when there is none yet."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(path: Path, results: dict[str, Any], *, sort_keys: bool = False) -> None:
    """Write `results` to `path` (indented JSON, its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=sort_keys) + "\n")
    print(f"wrote {path}")


def merge_into(path: Path, update: dict[str, Any]) -> None:
    """Deep-merge `update` into the JSON at `path` (other keys kept), write it."""

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    write_results(path, merge(read_results(path), update))
