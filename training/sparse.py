"""Train sparse coders (models/sparse_coding.py) on MNIST and export them as a `sparse` bundle.

Pipeline (`train_sparse`):
1. PSD: the dictionary starts at random training inputs (normalised) and the encoder at one ISTA step
   on it; each minibatch infers Z* = argmin E_psd(Y, Z) by FISTA started at the encoder's prediction,
   then takes an Adam step on D (columns renormalised) and on the encoder with Z* fixed. The
   validation energy picks the epoch.
2. LISTA: the optimal codes Z* of the final dictionary (plain sparse coding energy, `target_iterations`
   of FISTA from zero) are computed for `n_train` training inputs and the validation inputs; a K-step
   LISTA, started at K ISTA steps, is trained by backprop through time on 1/2 ||Z_K - Z*||^2 (plus
   `energy_weight` times the energy E(Y, Z_K) of its code) and the validation prediction error picks
   the epoch.
3. Search: the largest active atoms of a LISTA code are its binary signature (one bit per atom; how
   many, on validation: training/sparse_signature.py); the address is `address_bits` balanced bits
   of the LISTA code (PCA + ITQ, median thresholds, as for the image autoencoder's codes), so a
   Hamming ball around it finds images built from similar parts.

Inputs are whole 28x28 images, or random 12x12 patches (`patch_size`) with at least some ink.
Each stage checkpoints after every epoch under `<out>/checkpoints` with a fingerprint of its settings,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from models.sparse_coding import LISTA, PSD, energy, fista, lipschitz_constant
from training.mnist import MnistSplits

log = logging.getLogger(__name__)


@dataclass
class PSDSchedule:
    """Hyperparameters of PSD training."""

    epochs: int = 10  # passes over the training inputs
    batch_size: int = 100
    inference_iterations: int = 15  # FISTA steps per minibatch, started at the encoder's prediction
    dictionary_lr: float = 1e-3  # Adam on D, decayed by a half cosine to 1% of it
    encoder_lr: float = 1e-3  # Adam on W_e and theta


@dataclass
class LISTASchedule:
    """Hyperparameters of LISTA training."""

    steps: int = 3  # K: shrinkage steps (the first one needs no S)
    # one S and one threshold vector per step (False: shared by all steps). Untied trained no better on
    # validation (3,000 inputs: code error 8.47 vs 8.48) and the full one learned negative thresholds
    # for steps 1-2, so its inner codes were dense (~600 of 1,024 atoms) and one image cost 0.8 ms
    # instead of 0.14: tied keeps every step as sparse as the last, which is what serving relies on
    untied: bool = False
    target_iterations: int = 200  # FISTA iterations that define the optimal codes Z*
    # training inputs whose optimal codes are the targets: LISTA's 1024 + 2 x 1024^2 weights keep
    # learning from more (validation code error 8.4 from 3,000 inputs, 6.0 from 10,000)
    n_train: int = 50_000
    epochs: int = 15
    batch_size: int = 100
    # Adam, half-cosine decay to 1% of it, in units of the ISTA initialisation's scale: the step on
    # W_e, S and theta is learning_rate / L, since all three start at O(1/L) (W_e = D/L, theta = lam/L)
    learning_rate: float = 3e-2
    patience: int | None = 5  # stop after this many epochs without a better validation error
    # beta in the loss 1/2 ||Z_K - Z*||^2 + beta E(Y, Z_K): the energy term pulls the code toward what
    # Z* is optimal for (a good reconstruction at few active atoms) where Z* itself is hard to hit.
    # Validation code / reconstruction error (LISTA on 10,000 inputs, a 1-epoch dictionary): lr 1e-2,
    # beta 0: 6.1 / 16.3; lr 3e-2, beta 0.1: 4.4 / 15.3, beta 0.5: 4.7 / 13.9, beta 2: 5.5 / 13.7.
    energy_weight: float = 0.5


@dataclass
class SparseConfig:
    """Everything that determines a sparse bundle (written to its config.json)."""

    n_atoms: int = 1024  # m: dictionary size (784 pixels -> overcomplete)
    lam: float = 0.5  # L1 weight in E = 1/2 ||Y - Z D^T||^2 + lam ||Z||_1
    alpha: float = 1.0  # weight of the PSD code-prediction term
    nonnegative: bool = True  # codes >= 0: atoms become strokes, signatures mean "this part is present"
    patch_size: int | None = None  # None: whole 28x28 images; else random patch_size^2 patches
    n_train: int | None = None  # first n training images (quick runs); None = all 50,000
    n_patches: int = 100_000  # patches drawn from those images when patch_size is set
    n_validation: int = 2_000  # validation inputs used for model selection
    psd: PSDSchedule = field(default_factory=PSDSchedule)
    lista: LISTASchedule = field(default_factory=LISTASchedule)
    fista_iterations: int = 100  # the served FISTA encoder's default iteration count
    address_bits: int = 20
    seed: int = 0
    device: str = "auto"


PROFILES: dict[str, SparseConfig] = {
    "quick": SparseConfig(
        n_atoms=256,
        n_train=10_000,
        psd=PSDSchedule(epochs=2),
        lista=LISTASchedule(n_train=5_000, target_iterations=200, epochs=6),
    ),
    "full": SparseConfig(),
    # the seed's "12x12, 256 basis functions", on digit patches
    "patches": SparseConfig(
        n_atoms=256,
        lam=0.2,
        patch_size=12,
        psd=PSDSchedule(epochs=4),
        lista=LISTASchedule(n_train=20_000, epochs=15),
    ),
}


# ----- data --------------------------------------------------------------------------------------
def random_patches(
    images: np.ndarray, size: int, count: int, rng: np.random.Generator, min_ink: float = 1.0
) -> np.ndarray:
    """`count` random size x size patches of (n, 784) images whose squared ink is at least `min_ink`.

    Blank background patches would teach nothing and dominate a uniform draw. Returns (count, size^2).
    """
    side = int(math.isqrt(images.shape[1]))
    grid = images.reshape(-1, side, side)
    out: list[np.ndarray] = []
    have = 0
    while have < count:
        k = 2 * (count - have)
        idx = rng.integers(0, len(grid), k)
        rows = rng.integers(0, side - size + 1, k)
        cols = rng.integers(0, side - size + 1, k)
        offsets = np.arange(size)
        patches = grid[
            idx[:, None, None], rows[:, None, None] + offsets[None, :, None], cols[:, None, None] + offsets
        ].reshape(k, size * size)
        keep = patches[(patches**2).sum(1) >= min_ink]
        out.append(keep[: count - have])
        have += len(out[-1])
    return np.concatenate(out).astype(np.float32)


def training_inputs(config: SparseConfig, data: MnistSplits) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) inputs: whole images, or patches of the training / validation images."""
    n = config.n_train or len(data.train_x)
    train, valid = data.train_x[:n], data.valid_x
    if config.patch_size is None:
        return train, valid[: config.n_validation]
    rng = np.random.default_rng(config.seed)
    size = config.patch_size
    return (
        random_patches(train, size, config.n_patches, rng),
        random_patches(valid, size, config.n_validation, rng),
    )


# ----- checkpoints -------------------------------------------------------------------------------
def load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("key") != key:
        log.info("%s belongs to other settings; starting that stage afresh", path)
        return None
    return saved


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a run killed while saving keeps the previous checkpoint


def _cosine(step: int, total: int, floor: float = 0.01) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch: int = 1000) -> Tensor:
    return torch.cat([fn(x[s : s + batch]) for s in range(0, len(x), batch)])


# ----- PSD ---------------------------------------------------------------------------------------
@torch.no_grad()
def psd_validation(model: PSD, x: Tensor, n_iter: int) -> dict[str, float]:
    """Mean energy, reconstruction error (summed squares) and active atoms of the inferred codes."""
    lipschitz = lipschitz_constant(model.dictionary)
    z = batched(lambda b: model.infer(b, n_iter, lipschitz=lipschitz), x)
    recon = ((x - model.reconstruct(z)) ** 2).sum(1)
    return {
        "energy": float(energy(x, z, model.dictionary, model.lam).mean()),
        "reconstruction_error": float(recon.mean()),
        "active": float((z != 0).sum(1).float().mean()),
        "prediction_error": float(((z - batched(model.predict, x)) ** 2).sum(1).mean()),
    }


def train_psd(
    model: PSD,
    x: Tensor,
    xv: Tensor,
    schedule: PSDSchedule,
    *,
    checkpoint: Path | None,
    key: str,
    generator: torch.Generator,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Fit dictionary and encoder to the rows of x (n, n_inputs); returns one record per epoch."""
    opt_d = torch.optim.Adam([model.dictionary], lr=schedule.dictionary_lr)
    opt_e = torch.optim.Adam(model.encoder.parameters(), lr=schedule.encoder_lr)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, Tensor]] | None = None
    start_epoch = 1
    saved = load_checkpoint(checkpoint, key) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt_d.load_state_dict(saved["opt_d"])
        opt_e.load_state_dict(saved["opt_e"])
        generator.set_state(saved["generator"])
        history, start_epoch = saved["history"], saved["epoch"] + 1
        best = (saved["best_score"], saved["best_model"])
        log.info("PSD: resumed after epoch %d from %s", saved["epoch"], checkpoint)
    n = len(x)
    steps_per_epoch = math.ceil(n / schedule.batch_size)
    total = schedule.epochs * steps_per_epoch
    for epoch in range(start_epoch, schedule.epochs + 1):
        order = torch.randperm(n, generator=generator)
        sums = {"energy": 0.0, "reconstruction_error": 0.0, "active": 0.0}
        bar = tqdm(
            range(0, n, schedule.batch_size),
            desc=f"PSD epoch {epoch}/{schedule.epochs}",
            disable=not progress,
            leave=False,
        )
        for i, start in enumerate(bar):
            step = (epoch - 1) * steps_per_epoch + i
            for opt, lr in ((opt_d, schedule.dictionary_lr), (opt_e, schedule.encoder_lr)):
                for group in opt.param_groups:
                    group["lr"] = lr * _cosine(step, total)
            yb = x[order[start : start + schedule.batch_size]]
            # D changes little per step: the exact L every 50 steps, with a margin, keeps FISTA stable.
            if i % 50 == 0:
                lipschitz = 1.05 * lipschitz_constant(model.dictionary)
            z = model.infer(yb, schedule.inference_iterations, lipschitz=lipschitz)
            for opt, loss in ((opt_d, model.decoder_loss(yb, z)), (opt_e, model.encoder_loss(yb, z))):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.normalize_dictionary()
            with torch.no_grad():
                sums["energy"] += float(energy(yb, z, model.dictionary, model.lam).sum())
                sums["reconstruction_error"] += float(((yb - model.reconstruct(z)) ** 2).sum())
                sums["active"] += float((z != 0).sum())
            if i % 20 == 0:
                bar.set_postfix(energy=f"{sums['energy'] / ((i + 1) * len(yb)):.3f}")
        record = {"epoch": float(epoch), **{f"train_{k}": v / n for k, v in sums.items()}}
        record.update(
            {
                f"validation_{k}": v
                for k, v in psd_validation(model, xv, 2 * schedule.inference_iterations).items()
            }
        )
        history.append(record)
        log.info("PSD %s", " ".join(f"{k}={v:.4g}" for k, v in record.items()))
        if best is None or record["validation_energy"] < best[0]:
            best = (record["validation_energy"], copy.deepcopy(model.state_dict()))
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "key": key,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "opt_e": opt_e.state_dict(),
                    "generator": generator.get_state(),
                    "history": history,
                    "best_score": best[0],
                    "best_model": best[1],
                },
            )
    if best is not None:
        model.load_state_dict(best[1])
    return history


# ----- LISTA -------------------------------------------------------------------------------------
@torch.no_grad()
def optimal_codes(x: Tensor, dictionary: Tensor, lam: float, n_iter: int, nonnegative: bool) -> Tensor:
    """Z* = argmin 1/2 ||Y - Z D^T||^2 + lam ||Z||_1 by `n_iter` FISTA iterations from zero.  (n, m)."""
    lipschitz = lipschitz_constant(dictionary)
    return batched(
        lambda b: fista(b, dictionary, lam, n_iter, lipschitz=lipschitz, nonnegative=nonnegative), x
    )


@torch.no_grad()
def code_error(net: LISTA, x: Tensor, target: Tensor) -> float:
    """Mean over inputs of ||Z_K - Z*||^2."""
    return float(((batched(net, x) - target) ** 2).sum(1).mean())


@torch.no_grad()
def reconstruction_error(net: LISTA, x: Tensor, dictionary: Tensor) -> float:
    """Mean over inputs of ||Y - Z_K D^T||^2, what the FISTA comparison is made on."""
    return float(((x - batched(net, x) @ dictionary.T) ** 2).sum(1).mean())


def train_lista(
    net: LISTA,
    x: Tensor,
    target: Tensor,
    xv: Tensor,
    target_v: Tensor,
    schedule: LISTASchedule,
    *,
    dictionary: Tensor,
    lam: float,
    checkpoint: Path | None,
    key: str,
    generator: torch.Generator,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Backprop through the K steps on 1/2 ||Z_K - Z*||^2 + beta E(Y, Z_K); ends at its best validation epoch.

    The validation code error picks the epoch; the validation reconstruction error with `dictionary`
    is recorded beside it (the number FISTA's iterations are compared on).
    """
    # Adam's steps have the size of its learning rate whatever the gradient's scale: measured in the
    # units of the initialisation (1/L), so that a step does not wipe out W_e = D/L (L ~ 250 on MNIST).
    learning_rate = schedule.learning_rate / lipschitz_constant(dictionary)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    best_score, best_epoch, best_state = code_error(net, xv, target_v), 0, copy.deepcopy(net.state_dict())
    # Epoch 0 is the initialisation: K plain ISTA steps, the baseline LISTA must beat.
    history: list[dict[str, float]] = [
        {
            "epoch": 0.0,
            "validation_code_error": best_score,
            "validation_reconstruction_error": reconstruction_error(net, xv, dictionary),
        }
    ]
    log.info(
        "LISTA-%d at initialisation (= %d ISTA steps): validation code error %.4g",
        net.steps,
        net.steps,
        best_score,
    )
    start_epoch = 1
    saved = load_checkpoint(checkpoint, key) if checkpoint is not None else None
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        generator.set_state(saved["generator"])
        history, start_epoch = saved["history"], saved["epoch"] + 1
        best_score, best_epoch, best_state = saved["best_score"], saved["best_epoch"], saved["best_state"]
        log.info("LISTA: resumed after epoch %d from %s", saved["epoch"], checkpoint)
    n = len(x)
    steps_per_epoch = math.ceil(n / schedule.batch_size)
    total = schedule.epochs * steps_per_epoch
    for epoch in range(start_epoch, schedule.epochs + 1):
        if schedule.patience is not None and epoch - 1 - best_epoch >= schedule.patience:
            log.info("LISTA: no improvement for %d epochs, stopping", schedule.patience)
            break
        order = torch.randperm(n, generator=generator)
        running = 0.0
        bar = tqdm(
            range(0, n, schedule.batch_size),
            desc=f"LISTA epoch {epoch}/{schedule.epochs}",
            disable=not progress,
            leave=False,
        )
        for i, start in enumerate(bar):
            for group in opt.param_groups:
                group["lr"] = learning_rate * _cosine((epoch - 1) * steps_per_epoch + i, total)
            idx = order[start : start + schedule.batch_size]
            z = net(x[idx])
            loss = 0.5 * ((z - target[idx]) ** 2).sum(1).mean()
            if schedule.energy_weight > 0:
                loss = loss + schedule.energy_weight * energy(x[idx], z, dictionary, lam).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach()) * len(idx)
        score = code_error(net, xv, target_v)
        record = {
            "epoch": float(epoch),
            "train_loss": running / n,
            "validation_code_error": score,
            "validation_reconstruction_error": reconstruction_error(net, xv, dictionary),
        }
        history.append(record)
        log.info("LISTA %s", " ".join(f"{k}={v:.4g}" for k, v in record.items()))
        if score < best_score:
            best_score, best_epoch, best_state = score, epoch, copy.deepcopy(net.state_dict())
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "key": key,
                    "epoch": epoch,
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "generator": generator.get_state(),
                    "history": history,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                },
            )
    net.load_state_dict(best_state)
    return history
