"""Training the scanning convnet (models/convnet.py) on MNIST, with windows that teach it to scan.

Every minibatch of B training digits becomes B windows (28x28), generated on the fly as pieces of
digit strips with a soft target (training/convnet_windows.py): the digit's class where a digit is
centred, NONE where none is, and a mixture in between, so the presence 1 - p(NONE) the reader scans
for peaks at the digits' centres. The loss is the cross-entropy over the 11 outputs (10 digits + NONE)
against that target; recognition of a single normalised digit uses the 10 digit logits only.
Checkpoints after every epoch; the epoch with the lowest validation error (clean MNIST validation
digits, 10 classes) is kept.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from bundles.convnet import CONVNET_FORMAT_VERSION, ConvNetBundle
from bundles.io import write_bundle
from models.convnet import ScanningConvNet
from models.convnet_layout import NONE, ConvNetArchitecture
from training.convnet_windows import WindowConfig, make_windows
from training.mnist import MnistSplits
from training.stack import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvNetConfig:
    architecture: ConvNetArchitecture = field(default_factory=ConvNetArchitecture)
    windows: WindowConfig = field(default_factory=WindowConfig)
    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 2e-3  # Adam, one-cycle schedule
    weight_decay: float = 1e-4
    n_train: int | None = None  # first n training digits (None: all 50,000)
    seed: int = 0
    device: str = "auto"


PROFILES: dict[str, ConvNetConfig] = {
    "quick": ConvNetConfig(epochs=2, n_train=20000),
    "full": ConvNetConfig(),
    # full, with windows cut as the segmenting reader cuts strips (training/convnet_windows.py)
    "pieces": ConvNetConfig(windows=WindowConfig(cut=0.3, halved=0.1)),
}


@torch.no_grad()
def digit_error(model: ScanningConvNet, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Error of the 10-digit argmax on (N, 784) digits."""
    model.eval()
    wrong = 0
    for s in range(0, len(x), batch):
        logits = model.window_logits(x[s : s + batch])[:, :NONE]
        wrong += int((logits.argmax(1) != y[s : s + batch]).sum())
    return wrong / len(x)


def train_convnet(
    config: ConvNetConfig, data: MnistSplits, out: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train, keep the best epoch by validation error, write the bundle to `out`; returns its metrics."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    g = torch.Generator(device=device).manual_seed(config.seed)
    n = config.n_train or len(data.train_x)
    x = torch.from_numpy(np.ascontiguousarray(data.train_x[:n], dtype=np.float32)).to(device)
    y = torch.from_numpy(data.train_y[:n].astype(np.int64)).to(device)
    xv = torch.from_numpy(np.ascontiguousarray(data.valid_x, dtype=np.float32)).to(device)
    yv = torch.from_numpy(data.valid_y.astype(np.int64)).to(device)
    model = ScanningConvNet(config.architecture).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    checkpoint = out / "checkpoints" / "convnet.pt"
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "seconds": 0.0, "cpu_seconds": 0.0}
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved["config"] == asdict(config):
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            g.set_state(saved["generator"].to(g.get_state().device))
            state = saved["state"]
            log.info("resuming after epoch %d", state["epoch"])
    for epoch in range(state["epoch"], config.epochs):
        started, cpu_started = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(n, generator=g, device=device)
        total = 0.0
        bar = tqdm(
            range(steps_per_epoch), desc=f"convnet epoch {epoch + 1}", disable=not progress, leave=False
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            windows, targets = make_windows(x[idx], y[idx], config.windows, g)
            loss = F.cross_entropy(model(windows).flatten(1), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        valid = digit_error(model, xv, yv)
        state["seconds"] += time.perf_counter() - started
        state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - cpu_started
        state["epoch"] = epoch + 1
        state["history"].append(
            {"epoch": epoch + 1, "loss": total / steps_per_epoch, "validation_error": valid}
        )
        log.info(
            "convnet epoch %d loss %.4f validation error %.4f", epoch + 1, total / steps_per_epoch, valid
        )
        if state["best"] is None or valid <= state["best"]["validation_error"]:
            state["best"] = {
                "epoch": epoch + 1,
                "validation_error": valid,
                "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "config": asdict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "generator": g.get_state(),
                "state": state,
            },
            checkpoint,
        )
    best = state["best"]
    metrics = {
        "validation_error": {"convnet": best["validation_error"]},
        "best_epoch": best["epoch"],
        "history": state["history"],
        "train_seconds": state["seconds"],  # wall clock: includes time the job was paused or starved
        "train_cpu_seconds": state.get("cpu_seconds"),  # CPU time of the process
        "train_device": str(device),
        "torch_threads": torch.get_num_threads(),
        "n_train": n,
    }
    weights = {k: v.numpy() for k, v in best["weights"].items()}
    config_json = {
        "kind": ConvNetBundle.kind,
        "format_version": CONVNET_FORMAT_VERSION,
        "architecture": asdict(config.architecture),
        "training": asdict(config),
    }
    write_bundle(out, config_json, weights, metrics)
    return metrics
