"""Model bundles on disk: a directory with config.json, weights.safetensors and metrics.json.

Shared by every model kind. config.json carries `format_version` and `kind` and everything needed to
rebuild the model (architecture, training settings, seed); the weights are plain float32 arrays read
with `safetensors.numpy`, so loading a bundle needs no torch. Every failure to read or validate a
bundle raises `BundleError` (a ValueError) with a message that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
METRICS = "metrics.json"


class BundleError(ValueError):
    """A model bundle is missing, corrupt, or not the kind/version/shape the caller expects."""


def write_bundle(
    path: Path | str, config: Mapping[str, Any], weights: Mapping[str, np.ndarray], metrics: Mapping[str, Any]
) -> Path:
    """Write the three files of a bundle into `path` (created if needed); returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}, str(path / WEIGHTS))
    write_config(path, config)
    write_metrics(path, metrics)
    return path


def write_config(path: Path | str, config: Mapping[str, Any]) -> None:
    """(Re)write config.json, e.g. after settings are re-chosen for the same weights."""
    (Path(path) / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_metrics(path: Path | str, metrics: Mapping[str, Any]) -> None:
    """(Re)write metrics.json, e.g. after an evaluation adds test numbers."""
    (Path(path) / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _read_json(file: Path) -> dict[str, Any]:
    try:
        value = json.loads(file.read_text())
    except FileNotFoundError as err:
        raise BundleError(f"{file} is missing") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise BundleError(f"{file} must hold a JSON object")
    return value


def read_bundle(
    path: Path | str, *, kind: str, format_version: int | tuple[int, ...]
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Read and check a bundle's header; returns (config, weights, metrics).

    Refuses a bundle of another kind or format version (`format_version`: the one, or the tuple of
    those, this code reads), and weights that are unreadable or not finite. Shapes are
    model-specific: check them with `check_shapes`.
    """
    readable = format_version if isinstance(format_version, tuple) else (format_version,)
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory {path} does not exist")
    config = _read_json(path / CONFIG)
    if config.get("kind") != kind:
        raise BundleError(f"{path} holds a {config.get('kind')!r} bundle, not {kind!r}")
    if config.get("format_version") not in readable or isinstance(config.get("format_version"), bool):
        versions = " or ".join(map(str, readable))
        raise BundleError(
            f"{path} has format_version {config.get('format_version')!r}; this code reads {versions}"
        )
    metrics = _read_json(path / METRICS) if (path / METRICS).exists() else {}
    return config, read_weights(path / WEIGHTS), metrics


def read_weights(file: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file, refused (BundleError) when missing, corrupt or not finite."""
    try:
        weights = load_file(str(file))
    except FileNotFoundError as err:
        raise BundleError(f"{file} is missing") from err
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{file} is corrupt: {err}") from err
    for name, array in weights.items():
        if not np.isfinite(array).all():
            raise BundleError(f"{file}: tensor {name!r} has non-finite values")
    return weights


def check_shapes(
    path: Path | str, weights: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]
) -> None:
    """Raise BundleError unless `weights` holds exactly the expected tensors with the expected shapes."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise BundleError(f"{path}: weights do not match the config (missing {missing}, unexpected {extra})")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != tuple(shape):
            raise BundleError(
                f"{path}: tensor {name!r} has shape {weights[name].shape}, config implies {shape}"
            )


def id_from_fingerprint(name: str, fingerprint: str) -> str:
    """A bundle's id, one scheme for every kind: its name and the first 12 hex digits of its sha256
    fingerprint, e.g. "digits-153caa846145" (the name is the kind, or a text bundle's configured name)."""
    return f"{name}-{fingerprint[:12]}"


def weights_fingerprint(path: Path | str) -> str:
    """sha256 (hex) of a bundle's weights file: the fingerprint of every kind whose weights alone make its
    outputs (a text bundle's also covers its vocabulary and code sizes)."""
    return hashlib.sha256((Path(path) / WEIGHTS).read_bytes()).hexdigest()


def bundle_id(path: Path | str, kind: str) -> str:
    """The id of the `kind` bundle at `path`, from its weights' fingerprint."""
    return id_from_fingerprint(kind, weights_fingerprint(path))
