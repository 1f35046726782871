"""Training the scanning convnet (models/convnet.py) on MNIST, with windows that teach it to scan.

Every minibatch of B training digits becomes B windows (28x28), generated on the fly:

* every digit is distorted by a random affine map (rotation, scale, shear, translation), so the net
  also reads what the shared preprocessing leaves slightly off (MNIST's own spread of slants, sizes);
* `positive` windows (label: the digit) hold it centred to within `jitter` px; a `context` fraction
  of them also get neighbours left and/or right, spaced from touching (gap < 0) to apart, as in a
  strip of handwriting, so the net learns to read the middle digit only;
* `negative` windows (label NONE) are not centred on any digit: the gap between two digits, a
  digit moved at least `min_offset` px sideways or up/down, or empty paper;
* a `noisy` fraction gets Gaussian pixel noise.

The loss is the cross-entropy over the 11 outputs (10 digits + NONE); recognition of a single
normalised digit uses the 10 digit logits only. Checkpoints after every epoch; the epoch with the
lowest validation error (clean MNIST validation digits, 10 classes) is kept.
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
from models.convnet import NONE, SIDE, ConvNetArchitecture, ScanningConvNet
from training.mnist import MnistSplits
from training.stack import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowConfig:
    rotation_deg: float = 12.0
    scale: float = 0.12  # scale factor in 1 +- scale
    shear: float = 0.15
    jitter: float = 1.5  # px: a positive window's digit may sit this far off the centre
    context: float = 0.5  # fraction of positive windows with neighbours
    negative: float = 0.2  # fraction of windows labelled NONE
    min_offset: float = 7.0  # px: a negative window's nearest digit centre is at least this far away
    gap: tuple[float, float] = (-2.0, 6.0)  # px between neighbouring digits' ink (negative: touching)
    noisy: float = 0.15
    noise_std: float = 0.12  # noise std drawn uniformly in [0, noise_std]


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
}


# ----- windows -----------------------------------------------------------------------------------
def _affine(x: torch.Tensor, cfg: WindowConfig, g: torch.Generator, shift: torch.Tensor) -> torch.Tensor:
    """Random affine distortion of (B, 1, 28, 28) digits, then a shift of (B, 2) px (dx, dy)."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g, device=x.device)

    angle = u(-1, 1) * math.radians(cfg.rotation_deg)
    scale = 1.0 + u(-1, 1) * cfg.scale
    shear = u(-1, 1) * cfg.shear
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3, device=x.device)
    # output -> input coordinates (normalised to [-1, 1]); shear along x, then rotate and scale
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos + shear * sin
    # the shift is applied to the output, so in input coordinates it is A (dx, dy)
    theta[:, :, 2] = -torch.einsum("bij,bj->bi", theta[:, :, :2], shift * (2.0 / SIDE))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _ink_width(x: torch.Tensor) -> torch.Tensor:
    """Width (px) of each digit's ink columns.  (B, 1, 28, 28) -> (B,)."""
    cols = (x[:, 0] > 0.2).any(dim=1).float()  # (B, 28)
    idx = torch.arange(SIDE, device=x.device, dtype=torch.float32)
    left = torch.where(cols > 0, idx, torch.full_like(idx, SIDE)).min(dim=1).values
    right = torch.where(cols > 0, idx, torch.full_like(idx, -1)).max(dim=1).values
    return (right - left + 1).clamp(min=1.0)


def make_windows(
    x: torch.Tensor, y: torch.Tensor, cfg: WindowConfig, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows and labels from a batch of (B, 784) digits and (B,) labels (see the module doc)."""
    b, dev = x.shape[0], x.device
    digits = x.reshape(b, 1, SIDE, SIDE)

    def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, device=dev)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(b, generator=g, device=dev) < p

    def placed(dx: torch.Tensor, dy: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
        src = digits if perm is None else digits[perm]
        return _affine(src, cfg, g, torch.stack([dx, dy], dim=1))

    centre = placed(u(-cfg.jitter, cfg.jitter), u(-cfg.jitter, cfg.jitter))
    width = _ink_width(centre)
    perm_l = torch.randperm(b, generator=g, device=dev)
    perm_r = torch.randperm(b, generator=g, device=dev)
    width_l, width_r = width[perm_l], width[perm_r]
    # neighbours' centres: half of each ink width plus a gap (touching when the gap is negative)
    off_l = width / 2 + width_l / 2 + u(*cfg.gap)
    off_r = width / 2 + width_r / 2 + u(*cfg.gap)
    small_dy = u(-2.0, 2.0)
    left = placed(-off_l, small_dy, perm_l)
    right = placed(off_r, u(-2.0, 2.0), perm_r)
    context = coin(cfg.context)
    use_l = (context & coin(0.75)).float()[:, None, None, None]
    use_r = (context & coin(0.75)).float()[:, None, None, None]
    windows = torch.maximum(centre, torch.maximum(left * use_l, right * use_r))
    labels = y.clone()

    # negatives: a gap between two digits, one digit moved off the centre, or empty paper
    negative = coin(cfg.negative)
    kind = torch.randint(0, 4, (b,), generator=g, device=dev)
    gap_l = torch.maximum(width_l / 2 + u(1.0, 6.0), torch.full_like(width_l, cfg.min_offset))
    gap_r = torch.maximum(width_r / 2 + u(1.0, 6.0), torch.full_like(width_r, cfg.min_offset))
    between = torch.maximum(placed(-gap_l, small_dy, perm_l), placed(gap_r, u(-2.0, 2.0), perm_r))
    sign = torch.where(coin(0.5), 1.0, -1.0)
    far = torch.maximum(width / 2 + u(0.0, 4.0), torch.full_like(width, cfg.min_offset))
    sideways = torch.maximum(placed(sign * far, u(-2.0, 2.0)), right * use_r)
    vertical = placed(u(-2.0, 2.0), sign * u(cfg.min_offset + 1, 16.0))
    empty = torch.zeros_like(centre)
    neg = torch.where(
        (kind == 0)[:, None, None, None],
        between,
        torch.where(
            (kind == 1)[:, None, None, None],
            sideways,
            torch.where((kind == 2)[:, None, None, None], vertical, empty),
        ),
    )
    windows = torch.where(negative[:, None, None, None], neg, windows)
    labels = torch.where(negative, torch.full_like(labels, NONE), labels)

    noisy = coin(cfg.noisy).float()[:, None, None, None]
    noise = torch.randn(windows.shape, generator=g, device=dev) * u(0.0, cfg.noise_std)[:, None, None, None]
    return (windows + noisy * noise).clamp(0.0, 1.0), labels


# ----- training ----------------------------------------------------------------------------------
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
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "seconds": 0.0}
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
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=g, device=device)
        total = 0.0
        bar = tqdm(
            range(steps_per_epoch), desc=f"convnet epoch {epoch + 1}", disable=not progress, leave=False
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            windows, labels = make_windows(x[idx], y[idx], config.windows, g)
            loss = F.cross_entropy(model(windows).flatten(1), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        valid = digit_error(model, xv, yv)
        state["seconds"] += time.perf_counter() - started
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
        "train_seconds": state["seconds"],
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
