"""Greedy layer-wise pretraining of RBMs by contrastive divergence (slides 33-36).

One loop for every RBM in the project: minibatch SGD with momentum and weight decay on the CD-k
surrogate loss of `models.rbm.RBM`, a tqdm bar per layer, and a per-epoch log of the reconstruction
error on the training data and the free-energy gap to a held-out split (a growing gap means the layer
is overfitting).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from models.rbm import RBM
from training.batches import epoch_batches

log = logging.getLogger(__name__)


@dataclass
class CDSchedule:
    """Hyperparameters of one layer's CD training."""

    epochs: int = 10  # passes over the training data
    batch_size: int = 100  # examples per update
    learning_rate: float = 0.05  # SGD step on the per-example-averaged gradient
    momentum: float = 0.9  # final momentum; the first epochs use 0.5 (Hinton's practical guide)
    initial_momentum_epochs: int = 2  # epochs run at momentum 0.5 before switching to `momentum`
    weight_decay: float = 2e-4  # L2 penalty on W only (biases are not decayed)
    cd_steps: int = 1  # k in CD-k


def train_rbm(
    rbm: RBM,
    data: Tensor,
    schedule: CDSchedule,
    *,
    validation: Tensor | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    description: str = "rbm",
    progress: bool = True,
    deadline: float | None = None,
) -> list[dict[str, float]]:
    """Fit `rbm` to the rows of `data` (n, n_visible) with CD-k; returns one log record per epoch.

    `deadline` (a `time.monotonic()` value): stop after the first epoch that ends past it, so the
    history is shorter than `schedule.epochs` (a time budget; at least one epoch always runs).

    `transform` maps a minibatch before it is shown to the RBM (e.g. the up-pass of the layers below,
    so the data set itself never has to be materialised layer by layer). Shuffling and Gibbs sampling
    draw from `generator`, so a fixed seed gives a fixed run.
    """
    device = rbm.W.device
    decayed = [rbm.W]
    not_decayed = [rbm.visible_bias, rbm.hidden_bias]
    optimizer = torch.optim.SGD(
        [
            {"params": decayed, "weight_decay": schedule.weight_decay},
            {"params": not_decayed, "weight_decay": 0.0},
        ],
        lr=schedule.learning_rate,
        momentum=0.5,
    )
    prepare = transform or (lambda batch: batch)
    history: list[dict[str, float]] = []
    n = data.shape[0]
    for epoch in range(schedule.epochs):
        epoch_started = time.perf_counter()
        momentum = 0.5 if epoch < schedule.initial_momentum_epochs else schedule.momentum
        for group in optimizer.param_groups:
            group["momentum"] = momentum
        total_error, batches = 0.0, 0
        bar = epoch_batches(
            n,
            schedule.batch_size,
            generator=generator,
            description=f"{description} epoch {epoch + 1}/{schedule.epochs}",
            progress=progress,
        )
        for idx in bar:
            batch = prepare(data[idx].to(device))
            loss, _ = rbm.contrastive_divergence_loss(batch, schedule.cd_steps, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if batches % 20 == 0:
                total_error += float(rbm.reconstruction_error(batch))
                bar.set_postfix(recon=f"{total_error / (batches // 20 + 1):.4f}")
            batches += 1
        record = {"epoch": epoch + 1, "reconstruction_error": total_error / max(1, (batches + 19) // 20)}
        if validation is not None:
            record["free_energy_gap"] = free_energy_gap(rbm, data, validation, prepare)
        record["seconds"] = time.perf_counter() - epoch_started  # kept in checkpoints: resumed runs know it
        history.append(record)
        log.info("%s %s", description, " ".join(f"{k}={v:.4g}" for k, v in record.items()))
        if deadline is not None and time.monotonic() > deadline and epoch + 1 < schedule.epochs:
            log.info(
                "%s: time budget spent, stopping after epoch %d of %d",
                description,
                epoch + 1,
                schedule.epochs,
            )
            break
    return history


def free_energy_gap(
    rbm: RBM, train: Tensor, validation: Tensor, prepare: Callable[[Tensor], Tensor], sample: int = 1000
) -> float:
    """Mean free energy of validation rows minus that of as many training rows (overfitting check)."""
    device = rbm.W.device
    with torch.no_grad():
        f_val = rbm.free_energy(prepare(validation[:sample].to(device))).mean()
        f_train = rbm.free_energy(prepare(train[:sample].to(device))).mean()
    return float(f_val - f_train)
