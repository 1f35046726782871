"""Train the predictive network (models/predictive.py) on Moving MNIST; write a `predictive` bundle.

Every step draws a fresh batch of training sequences (training/moving_mnist.py, digits from MNIST's
first 50,000 training images; the batch is a function of (seed, step), so a resumed run sees exactly
the batches an uninterrupted one would). The network reads frames 1..L and predicts frames 2..L+1
(teacher forcing); the loss is the mean squared pixel error, optimised by RMSProp (lr 0.001, the
seed's) and, with `adversarial_weight` > 0, plus that weight times the adversarial loss of a
discriminator trained alongside (seed slides 26-37).

Every `validate_every` steps the mean next-frame MSE on a fixed set of validation sequences (held-out
training digits) is measured; the best state is what the bundle gets. The whole training state
(network, optimiser, discriminator, best state, history) is checkpointed to `<out>/checkpoints` with a
fingerprint of the settings at every validation, so an interrupted run resumes where it stopped.

`objective="reconstruct"` trains the control instead, the frame autoencoder with a code of the same
size (`FrameAutoencoder`), on the same frames, written as a `frame_autoencoder` bundle.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bundles.io import write_bundle
from bundles.predict import PREDICTIVE_FORMAT_VERSION, load_torch_state, torch_weights
from models.predictive import (
    Discriminator,
    FrameAutoencoder,
    PredictiveArchitecture,
    PredictiveNet,
    discriminator_loss,
    generator_loss,
)
from training.mnist import MnistSplits
from training.moving_mnist import MovingMnistSpec, Sequences, sequence_set, split_digits, training_batch
from training.seed import set_seed
from training.stack import fingerprint, resolve_device

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """Everything that determines a predictive (or frame autoencoder) bundle; saved as config.json."""

    architecture: PredictiveArchitecture = field(default_factory=PredictiveArchitecture)
    data: MovingMnistSpec = field(default_factory=MovingMnistSpec)
    objective: str = "next_frame"  # or "reconstruct" (the frame autoencoder control)
    window: int = 10  # L: frames read per training sequence (the seed: 5-15 steps)
    batch_size: int = 16
    steps: int = 1500
    learning_rate: float = 1e-3  # RMSProp (Keras' rho = 0.9), as in the seed
    clip_norm: float = 1.0  # gradient norm clipping (the LSTM's early steps can explode otherwise)
    adversarial_weight: float = 0.0  # > 0: MSE + weight * adversarial loss
    validate_every: int = 100
    n_validation: int = 128  # validation sequences
    context: int = 10  # frames of context when validating (and by default when serving)
    seed: int = 0
    device: str = "auto"


def _profile(n_hidden: int, steps: int, **kw: Any) -> PredictConfig:
    return PredictConfig(architecture=PredictiveArchitecture(n_hidden=n_hidden), steps=steps, **kw)


PROFILES: dict[str, PredictConfig] = {
    # seconds: 32x32 frames, a few units (the tests; it learns little)
    "tiny": PredictConfig(
        architecture=PredictiveArchitecture(size=32, channels=(4, 4), n_hidden=32),
        data=MovingMnistSpec(size=32, n_frames=12, speed=1.8),
        window=6,
        batch_size=4,
        steps=6,
        validate_every=3,
        n_validation=8,
        context=5,
    ),
    "quick": _profile(256, 300, validate_every=50),  # minutes on one CPU thread
    "cpu": _profile(1024, 1500, validate_every=100),  # under an hour on one CPU thread
    "full": _profile(1024, 40_000, batch_size=32, window=15, validate_every=1000),  # GPU
}


# ----- batches -----------------------------------------------------------------------------------
def _tensor(x: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def next_frame_loss(net: PredictiveNet, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(MSE of predicting frames[:, 1:] from frames[:, :-1], the predictions, the targets)."""
    predictions, _ = net(frames[:, :-1])
    targets = frames[:, 1:]
    return nn.functional.mse_loss(predictions, targets), predictions, targets


@torch.no_grad()
def validation_mse(
    model: nn.Module, sequences: Sequences, config: PredictConfig, device: torch.device
) -> float:
    """The selection score on the validation set, both objectives measured at frame `context` + 1.

    Predictive: MSE of predicting frame context+1 from frames 1..context (the benchmark's 1-step
    MSE). Autoencoder: MSE of reconstructing frames 1..context+1.
    """
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(sequences), 32):
        frames = _tensor(sequences.frames[start : start + 32, : config.context + 1], device)
        if isinstance(model, PredictiveNet):
            predictions, _ = model(frames[:, :-1])
            loss = nn.functional.mse_loss(predictions[:, -1], frames[:, -1])
        else:
            flat = frames.flatten(0, 1)
            loss = nn.functional.mse_loss(model(flat), flat)
        total += float(loss) * len(frames)
        count += len(frames)
    model.train()
    return total / count


# ----- training ----------------------------------------------------------------------------------
def _settings(config: PredictConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k not in ("device", "validate_every")}


def _checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def build_model(config: PredictConfig) -> nn.Module:
    if config.objective == "next_frame":
        return PredictiveNet(config.architecture)
    if config.objective == "reconstruct":
        return FrameAutoencoder(config.architecture)
    raise ValueError(f"objective must be next_frame or reconstruct, got {config.objective!r}")


def train_predictive(
    config: PredictConfig,
    data: MnistSplits,
    out: Path,
    *,
    progress: bool = True,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Train on Moving MNIST made from `data`; write the bundle to `out`; return its metrics.

    `max_minutes` stops after the validation that crosses the budget (the best state so far is kept).
    """
    started = time.perf_counter()
    set_seed(config.seed)
    device = resolve_device(config.device)
    images, labels = split_digits(data, "train")
    validation = sequence_set(data, "validation", config.n_validation, config.data, config.seed)
    model = build_model(config).to(device)
    critic = Discriminator(config.architecture.size).to(device) if config.adversarial_weight > 0 else None
    optimizer = torch.optim.RMSprop(model.parameters(), lr=config.learning_rate, alpha=0.9)
    critic_optimizer = (
        torch.optim.RMSprop(critic.parameters(), lr=config.learning_rate, alpha=0.9)
        if critic is not None
        else None
    )
    key = fingerprint(_settings(config))
    checkpoint = out / "checkpoints" / "training.pt"
    step, best, best_state, history = 0, float("inf"), None, []
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("key") == key:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if critic is not None:
                critic.load_state_dict(saved["critic"])
                critic_optimizer.load_state_dict(saved["critic_optimizer"])  # type: ignore[union-attr]
            step, best, best_state, history = (
                saved["step"],
                saved["best"],
                saved["best_state"],
                saved["history"],
            )
            log.info(
                "resuming %s at step %d of %d (best validation MSE %.5f)",
                checkpoint,
                step,
                config.steps,
                best,
            )
        else:
            log.info("ignoring %s: it was made with other settings", checkpoint)
    spec = replace(config.data, n_frames=config.window + 1)
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc=config.objective)
    window_loss, window_started = 0.0, time.perf_counter()
    while step < config.steps:
        batch = training_batch(images, labels, config.batch_size, spec, config.seed, step)
        frames = _tensor(batch.frames, device)
        if isinstance(model, PredictiveNet):
            loss, predictions, targets = next_frame_loss(model, frames)
            total = loss
            if critic is not None:
                previous = frames[:, :-1].flatten(0, 1)
                fake = predictions.flatten(0, 1)
                critic_optimizer.zero_grad()  # type: ignore[union-attr]
                discriminator_loss(critic, previous, targets.flatten(0, 1), fake).backward()
                critic_optimizer.step()  # type: ignore[union-attr]
                total = loss + config.adversarial_weight * generator_loss(critic, previous, fake)
        else:
            flat = frames[:, :-1].flatten(0, 1)
            loss = total = nn.functional.mse_loss(model(flat), flat)
        optimizer.zero_grad()
        total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        step += 1
        window_loss += loss.item()
        bar.update(1)
        if step % config.validate_every == 0 or step == config.steps:
            score = validation_mse(model, validation, config, device)
            seconds = time.perf_counter() - window_started
            n = (step - 1) % config.validate_every + 1
            history.append({"step": step, "train_mse": window_loss / n, "validation_mse": score})
            log.info(
                "%s step %d/%d: train MSE %.5f, validation MSE %.5f, %.2f s/step",
                config.objective,
                step,
                config.steps,
                window_loss / n,
                score,
                seconds / n,
            )
            window_loss, window_started = 0.0, time.perf_counter()
            if score < best:
                best, best_state = score, copy.deepcopy(model.state_dict())
            state = {
                "key": key,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best": best,
                "best_state": best_state,
                "history": history,
            }
            if critic is not None:
                state["critic"] = critic.state_dict()
                state["critic_optimizer"] = critic_optimizer.state_dict()  # type: ignore[union-attr]
            _checkpoint(checkpoint, state)
            if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
                log.info("stopping at step %d: the %.1f-minute budget is spent", step, max_minutes)
                break
    bar.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    metrics = {
        "validation_mse": best,
        "steps": step,
        "history": history,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    kind = "predictive" if config.objective == "next_frame" else "frame_autoencoder"
    saved_config = {
        "kind": kind,
        "format_version": PREDICTIVE_FORMAT_VERSION,
        **{k: v for k, v in asdict(config).items() if k != "device"},
    }
    write_bundle(out, saved_config, torch_weights(model), metrics)
    log.info("wrote %s (validation MSE %.5f)", out, best)
    return metrics


def load_model(path: Path | str, device: str = "cpu") -> nn.Module:
    """A bundle's network as a torch module (for evaluation on many sequences)."""
    config, weights = load_torch_state(path)
    arch = PredictiveArchitecture(
        **{**config["architecture"], "channels": tuple(config["architecture"]["channels"])}
    )
    model = PredictiveNet(arch) if config["kind"] == "predictive" else FrameAutoencoder(arch)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model.to(resolve_device(device)).eval()
