"""Greedy pretraining of a stack of RBMs with per-layer checkpoints (shared by the MNIST models).

Layer l is trained by `train_rbm` on the mean-field up-pass of layers 0..l-1. The up-pass is
deterministic, so it is computed once per layer (n x n_in floats) instead of again for every minibatch
of every epoch (which cost a code RBM on top of a 2000-500-500 text stack three times its own CD).
After each layer its weights are saved under `checkpoint_dir` with a fingerprint of everything that
determined them, so an interrupted run resumes at the first layer that is not done.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models.dbn import up_pass
from models.rbm import RBM
from training.pretrain import CDSchedule, train_rbm

log = logging.getLogger(__name__)

FEATURE_CHUNK = 4096  # rows per up-pass when a layer's input features are computed


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu' / 'cuda' as given (cuda must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def sampling_generator(device: torch.device, seed: int) -> torch.Generator | None:
    """An explicit CPU generator on CPU; on CUDA the (seeded) global generator, which CUDA kernels need."""
    return torch.Generator().manual_seed(seed) if device.type == "cpu" else None


def fingerprint(settings: Any) -> str:
    """A short hash of JSON-serialisable settings, to tell whether a checkpoint belongs to this run."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_or_resume(
    rbm: RBM,
    name: str,
    data: Tensor,
    schedule: CDSchedule,
    *,
    below: Sequence[RBM],
    checkpoint_dir: Path | None,
    key: str,
    validation: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    features_from: int | None = None,
    deadline: float | None = None,
) -> list[dict[str, float]]:
    """Train one RBM on the up-pass of `below`, or load it from `checkpoint_dir/name.pt` if `key` matches.

    `features_from`: when set, only columns [:features_from] of each row go through the up-pass and the
    rest (e.g. one-hot labels) are appended unchanged. `deadline`: see `train_rbm`; a layer cut short
    by it is not checkpointed (a later run without the budget must not resume it as finished).
    """
    path = checkpoint_dir / f"{name}.pt" if checkpoint_dir is not None else None
    if path is not None and path.is_file():
        saved = torch.load(path, map_location=rbm.W.device, weights_only=True)
        if saved.get("key") == key:
            rbm.load_state_dict(saved["state"])
            log.info("%s: resumed from %s", name, path)
            history: list[dict[str, float]] = saved["history"]
            return history

    device = rbm.W.device

    def features(rows: Tensor) -> Tensor:
        """The layer's input: the deterministic up-pass of `below`, computed once for all epochs."""
        if not below:
            return rows
        chunks = []
        with torch.no_grad():
            for chunk in rows.split(FEATURE_CHUNK):
                chunk = chunk.to(device)
                if features_from is None:
                    out = up_pass(below, chunk)
                else:
                    lifted = up_pass(below, chunk[:, :features_from])
                    out = torch.cat([lifted, chunk[:, features_from:]], dim=1)
                chunks.append(out.to(rows.device))
        return torch.cat(chunks)

    history = train_rbm(
        rbm,
        features(data),
        schedule,
        validation=None if validation is None else features(validation),
        generator=generator,
        description=name,
        progress=progress,
        deadline=deadline,
    )
    if path is not None and len(history) == schedule.epochs:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "state": rbm.state_dict(), "history": history}, path)
    return history


def pretrain_stack(
    rbms: Sequence[RBM],
    data: Tensor,
    schedules: Sequence[CDSchedule],
    *,
    checkpoint_dir: Path | None,
    key: str,
    validation: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    prefix: str = "rbm",
    deadline: float | None = None,
) -> list[list[dict[str, float]]]:
    """Greedy layer-wise CD training of `rbms` (bottom first); returns each layer's history."""
    histories = []
    for layer, (rbm, schedule) in enumerate(zip(rbms, schedules, strict=True)):
        histories.append(
            train_or_resume(
                rbm,
                f"{prefix}{layer}",
                data,
                schedule,
                below=rbms[:layer],
                checkpoint_dir=checkpoint_dir,
                key=f"{key}-{layer}",
                validation=validation,
                generator=generator,
                progress=progress,
                deadline=deadline,
            )
        )
    return histories
