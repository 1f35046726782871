"""Train the motor-program model (seed 000) and export it as a `motor` bundle.

No hand-drawn trajectories: each class starts from one prototype program (training/motor_prototypes.py)
and every step trains, for all classes at once (one batched step over the ten nets):

1. **Self-supervised pairs** (slides 7, 9): clean codes, drawn from the prototype or from the pool of
   codes the recognition net currently assigns to real training digits of the class ("genetic jumps"
   along the data manifold), get noise (`perturb_codes`); the renderer draws them; the recognition net
   learns  image -> noisy code  (squared error in code units), and the generative net learns
   noisy code -> image  (squared pixel error) on the same pairs (slide 20).
2. **Refinement on real digits** by reconstruction error: for training digits x of class c,
   ||x - render(R_c(x))||^2 is backpropagated through the differentiable renderer into R_c.

The pools are refreshed every `refresh_every` steps. Adam with a half-cosine decay; a checkpoint every
`checkpoint_every` steps lets an interrupted run resume where it stopped (same config only).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from bundles.io import write_bundle
from bundles.motor import (
    CLASS_CODES,
    GENERATIVE,
    MOTOR_FORMAT_VERSION,
    PROTOTYPES,
    RECOGNITION,
    SCALE,
    layer_names,
)
from bundles.motor_search import LocalSearch
from models.motor import MotorNets
from models.motor_codes import N_EQ, NoiseConfig, code_from_program, perturb_codes, program_from_code
from models.motor_renderer import PROGRAM_SIZE, RendererConfig, render
from training.mnist import MnistSplits
from training.motor_calibrate import recalibrate, refresh_class_codes, search_grid
from training.motor_prototypes import prototype_programs
from training.seed import set_seed
from training.stack import fingerprint, resolve_device

log = logging.getLogger(__name__)


@dataclass
class MotorConfig:
    """Everything that determines a motor bundle (written to its config.json)."""

    n_classes: int = 10
    hidden: tuple[int, ...] = (256, 256)  # hidden layers of every recognition and generative net
    steps: int = 6000  # training steps; each trains every class's nets
    synthetic_batch: int = 32  # noisy-code pairs per class per step
    real_batch: int = 16  # real training digits per class per step (reconstruction refinement)
    learning_rate: float = 1e-3  # Adam, decayed by a half cosine to final_lr_fraction of it
    final_lr_fraction: float = 0.05
    warmup_steps: int = 300  # first steps: prototype codes only, no reconstruction term
    prototype_share: float = 0.2  # after warm-up, this share of clean codes is the prototype
    refresh_every: int = 100  # steps between pool refreshes
    pool_size: int = 256  # codes of real digits kept per class
    reconstruction_weight: float = 0.05  # weight of the squared pixel error of real digits
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    n_train_per_class: int | None = None  # first n training digits of each class (None: all)
    n_validation: int = 1000  # validation digits scored every eval_every steps
    eval_every: int = 500
    # codes of the first training digits of each class kept in the bundle: the class-manifold term's
    # reference and the programs `sample_code` draws new digits from
    n_class_codes: int = 4000
    # local search settings tried on the validation digits (training/motor_calibrate.py): every combination
    local_search_iterations: tuple[int, ...] = (10,)
    local_search_steps: tuple[float, ...] = (0.01, 0.02)  # initial steps
    local_search_priors: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0)  # lambda, weight of ||z - z0||^2
    local_search_top_k: tuple[int, ...] = (3,)  # classes refined per image
    local_search_manifolds: tuple[float, ...] = (0.0, 0.1)  # gamma, weight of the class-manifold term
    checkpoint_every: int = 250
    seed: int = 0
    device: str = "auto"


PROFILES: dict[str, MotorConfig] = {
    # a few minutes on one core: every class's nets, 1,000 digits per class, one local-search setting
    "quick": MotorConfig(
        steps=400,
        warmup_steps=100,
        refresh_every=50,
        eval_every=200,
        n_train_per_class=1000,
        n_validation=500,
        local_search_steps=(0.01,),
        local_search_priors=(0.0, 8.0),
    ),
    "full": MotorConfig(),
}


# ----- codes --------------------------------------------------------------------------------------
def prototype_codes(n_classes: int) -> Tensor:
    """(C, 70) codes of the class prototypes."""
    return torch.from_numpy(code_from_program(prototype_programs(n_classes).astype(np.float64))).float()


def code_scale() -> Tensor:
    """(70,) the unit of each code coordinate for the nets: 0.1 pen units for the planned points,
    0.3 for log stiffnesses and the two style values."""
    return torch.cat([torch.full((N_EQ,), 0.1), torch.full((PROGRAM_SIZE - N_EQ,), 0.3)])


def draw(codes: Tensor, renderer: RendererConfig) -> Tensor:
    """Render codes (..., 70) -> images (..., 784)."""
    flat = codes.reshape(-1, PROGRAM_SIZE)
    images: Tensor = render(program_from_code(flat), renderer).images.reshape(*codes.shape[:-1], -1)
    return images


# ----- training -----------------------------------------------------------------------------------
def _class_indices(labels: np.ndarray, n_classes: int, limit: int | None) -> list[np.ndarray]:
    indices = [np.flatnonzero(labels == c)[:limit] for c in range(n_classes)]
    empty = [c for c, idx in enumerate(indices) if len(idx) == 0]
    if empty:
        raise ValueError(f"no training digits of class(es) {empty}")
    return indices


def _sample_real(x: Tensor, indices: list[Tensor], n: int, generator: torch.Generator | None) -> Tensor:
    """n random training digits of each class -> (C, n, 784)."""
    picks = [idx[torch.randint(len(idx), (n,), generator=generator)] for idx in indices]
    return x[torch.stack(picks)]


@torch.no_grad()
def reconstruction_errors(
    nets: MotorNets, images: Tensor, renderer: RendererConfig, batch: int = 500
) -> Tensor:
    """Squared pixel error of every class's reconstruction (recognition net, then renderer).  (N, C)."""
    errors = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        codes = nets.recognize(x.expand(nets.n_classes, *x.shape))
        errors.append(((draw(codes, renderer) - x) ** 2).sum(-1).T)
    return torch.cat(errors)


def _lr(config: MotorConfig, step: int) -> float:
    progress = step / max(1, config.steps)
    floor = config.final_lr_fraction
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(
    nets: MotorNets,
    opt: torch.optim.Optimizer,
    pools: Tensor,
    real: Tensor,
    step: int,
    config: MotorConfig,
    generator: torch.Generator | None,
) -> dict[str, float]:
    """One step for every class: noisy-code pairs, plus real-digit reconstruction after warm-up."""
    c, b = nets.n_classes, config.synthetic_batch
    warm = step < config.warmup_steps
    pick = torch.randint(pools.shape[1], (c, b), generator=generator, device=pools.device)
    clean = torch.gather(pools, 1, pick[..., None].expand(c, b, PROGRAM_SIZE))
    from_prototype = torch.rand(c, b, 1, generator=generator, device=pools.device) < (
        1.0 if warm else config.prototype_share
    )
    clean = torch.where(from_prototype, nets.prototypes[:, None, :], clean)
    noisy = perturb_codes(
        clean, config.noise, lambda shape: torch.randn(shape, generator=generator, device=clean.device)
    )
    with torch.no_grad():
        images = draw(noisy, config.renderer)  # (C, b, 784)
    code_loss = (((nets.recognize(images) - noisy) / nets.scale) ** 2).mean(dim=(1, 2)).sum()
    gen_loss = ((nets.generate(noisy) - images) ** 2).sum(-1).mean(dim=1).sum()
    loss = code_loss + gen_loss
    rec_loss = torch.zeros(())
    if not warm:
        rec_loss = ((draw(nets.recognize(real), config.renderer) - real) ** 2).sum(-1).mean(dim=1).sum()
        loss = loss + config.reconstruction_weight * rec_loss
    for group in opt.param_groups:
        group["lr"] = _lr(config, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {
        "code": float(code_loss.detach()) / c,
        "generative": float(gen_loss.detach()) / c,
        "reconstruction": float(rec_loss.detach()) / c,
    }


def _checkpoint_key(config: MotorConfig) -> str:
    """What the checkpoint depends on: not the evaluation, checkpointing, device or local search grid."""
    settings = {
        k: v
        for k, v in asdict(
            replace(config, device="", eval_every=0, checkpoint_every=0, n_validation=0)
        ).items()
        if not k.startswith("local_search_")
    }
    return fingerprint(settings)


def train_motor(
    config: MotorConfig, data: MnistSplits, out: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train every class's nets, write the bundle to `out` and return its metrics."""
    started = time.perf_counter()
    generator: torch.Generator | None = set_seed(config.seed)
    device = resolve_device(config.device)
    if device.type != "cpu":
        generator = None  # CUDA kernels sample from the seeded global generator
    x = torch.from_numpy(data.train_x).to(device)
    indices = [
        torch.from_numpy(i).to(device)
        for i in _class_indices(data.train_y, config.n_classes, config.n_train_per_class)
    ]
    xv = torch.from_numpy(data.valid_x[: config.n_validation]).to(device)
    yv = torch.from_numpy(data.valid_y[: config.n_validation]).to(device)
    nets = MotorNets(prototype_codes(config.n_classes), code_scale(), config.hidden).to(device)
    opt = torch.optim.Adam(nets.parameters(), lr=config.learning_rate)
    pools = nets.prototypes[:, None, :].repeat(1, config.pool_size, 1)
    history: list[dict[str, float]] = []
    running: dict[str, float] = {}  # smoothed losses, for the progress bar and the history
    start_step = 0
    key = _checkpoint_key(config)
    checkpoint = out / "checkpoints" / "motor.pt"
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=True)
        if saved.get("key") == key:
            nets.load_state_dict(saved["nets"])
            opt.load_state_dict(saved["opt"])
            pools, history, start_step = saved["pools"], saved["history"], int(saved["step"])
            running = saved["running"]
            if generator is not None:
                generator.set_state(saved["generator"])
            log.info("motor: resumed at step %d from %s", start_step, checkpoint)
        else:
            log.info("motor: %s belongs to another config; starting over", checkpoint)

    def save(step: int) -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "key": key,
            "nets": nets.state_dict(),
            "opt": opt.state_dict(),
            "pools": pools,
            "history": history,
            "running": running,
            "step": step,
        }
        if generator is not None:
            state["generator"] = generator.get_state()
        torch.save(state, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)  # never a half-written checkpoint

    bar = tqdm(
        range(start_step, config.steps),
        initial=start_step,
        total=config.steps,
        desc="motor",
        disable=not progress,
    )
    for step in bar:
        if step >= config.warmup_steps and (step - config.warmup_steps) % config.refresh_every == 0:
            with torch.no_grad():
                pools = nets.recognize(_sample_real(x, indices, config.pool_size, generator))
        real = _sample_real(x, indices, config.real_batch, generator)
        losses = train_step(nets, opt, pools, real, step, config, generator)
        running = {k: 0.98 * running.get(k, v) + 0.02 * v for k, v in losses.items()}
        bar.set_postfix({k: f"{v:.3g}" for k, v in running.items()})
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            errors = reconstruction_errors(nets, xv, config.renderer)
            record = {
                "step": done,
                **running,
                "validation_error": float((errors.argmin(1) != yv).float().mean()),
                "validation_pixel_error": float(errors.gather(1, yv[:, None]).mean()),
            }
            history.append(record)
            log.info("motor step %d: %s", done, {k: round(v, 4) for k, v in record.items()})
        if done % config.checkpoint_every == 0 or done == config.steps:
            save(done)
    bar.close()
    metrics: dict[str, Any] = {"device": device.type, "history": history}
    metrics["train_seconds"] = time.perf_counter() - started
    write_motor_bundle(out, nets, pools.cpu().numpy(), config, metrics)
    refresh_class_codes(out, data.train_x, data.train_y, _class_code_count(config, data.train_y))
    metrics.update(
        recalibrate(
            out,
            data.valid_x[: config.n_validation],
            data.valid_y[: config.n_validation],
            local_search_grid(config),
        )
    )
    log.info("motor bundle written to %s in %.0f s", out, metrics["train_seconds"])
    return metrics


def local_search_grid(config: MotorConfig) -> list[LocalSearch]:
    """The local search settings that calibration tries."""
    return search_grid(
        config.local_search_iterations,
        config.local_search_steps,
        config.local_search_priors,
        config.local_search_top_k,
        config.local_search_manifolds,
    )


def _class_code_count(config: MotorConfig, labels: np.ndarray) -> int:
    """n_class_codes, or fewer when a class (within n_train_per_class) has fewer training digits."""
    counts = np.bincount(labels, minlength=config.n_classes)
    limit = config.n_train_per_class or int(counts.max())
    return int(min(config.n_class_codes, limit, counts.min()))


def export_weights(nets: MotorNets) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for net, stack in ((RECOGNITION, nets.recognition), (GENERATIVE, nets.generative)):
        for layer, (w, b) in enumerate(stack.layers()):
            weight, bias = layer_names(net, layer)
            weights[weight], weights[bias] = w.detach().cpu().numpy(), b.detach().cpu().numpy()
    weights[PROTOTYPES] = nets.prototypes.cpu().numpy()
    weights[SCALE] = nets.scale.cpu().numpy()
    return weights


def write_motor_bundle(
    out: Path,
    nets: MotorNets,
    class_codes: np.ndarray,
    config: MotorConfig,
    metrics: dict[str, Any],
) -> Path:
    """Write the bundle with the default local search and temperature 1 (`recalibrate` sets both)."""
    config_json = {
        "format_version": MOTOR_FORMAT_VERSION,
        "kind": "motor",
        "architecture": {
            "n_classes": config.n_classes,
            "hidden": list(config.hidden),
            "program_size": PROGRAM_SIZE,
            "n_class_codes": int(class_codes.shape[1]),
        },
        "renderer": asdict(config.renderer),
        "local_search": asdict(LocalSearch()),
        "temperature": 1.0,
        "seed": config.seed,
        "training": asdict(config),
    }
    return write_bundle(out, config_json, {**export_weights(nets), CLASS_CODES: class_codes}, metrics)
