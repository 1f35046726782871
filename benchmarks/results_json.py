"""Results files that several benchmark scripts write parts of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def merge_into(path: Path, update: dict[str, Any]) -> None:
    """Deep-merge `update` into the JSON at `path` (other keys kept), write it."""
    current = json.loads(path.read_text()) if path.exists() else {}

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    path.write_text(json.dumps(merge(current, update), indent=2) + "\n")
    print(f"wrote {path}")
