"""Fine-tuning by backpropagation with validation-based model selection (slide 52).

The loop knows nothing about the model: it takes a loss on a minibatch and, optionally, a validation
score (lower is better) computed after every epoch. It keeps the weights of the best-scoring epoch,
stops after `patience` epochs without improvement, and restores the best weights at the end.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.batches import epoch_batches

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Tensor, Tensor | None], Tensor]


@dataclass
class BackpropSchedule:
    """Hyperparameters of one fine-tuning run."""

    epochs: int = 50  # maximum passes over the training data
    batch_size: int = 100  # examples per update
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    learning_rate: float = 0.1  # initial step size, decayed by a half cosine to `final_lr_fraction` of it
    final_lr_fraction: float = 0.01  # small last steps: the "gentle" end of fine-tuning
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0  # L2 on all parameters
    patience: int | None = None  # stop after this many epochs without a better validation score


def fine_tune(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor | None,
    schedule: BackpropSchedule,
    *,
    validate: Callable[[], float] | None = None,
    generator: torch.Generator | None = None,
    description: str = "fine-tune",
    progress: bool = True,
    deadline: float | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Minimise `loss_fn(model, x_batch, y_batch)` over the rows of x (and y, if given).

    Returns (one log record per epoch, the best epoch). With `validate`, the model ends holding the
    weights of the epoch with the lowest validation score; without it, those of the last epoch.
    `deadline` (a `time.monotonic()` value): stop after the first epoch that ends past it, keeping
    the best epoch so far (a time budget; at least one epoch always runs).
    """
    device = next(model.parameters()).device
    params = list(model.parameters())
    if schedule.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=schedule.learning_rate, momentum=schedule.momentum, weight_decay=schedule.weight_decay
        )
    elif schedule.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=schedule.learning_rate, weight_decay=schedule.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {schedule.optimizer!r}")
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / schedule.batch_size)
    total_steps = max(1, schedule.epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        floor = schedule.final_lr_fraction
        return schedule.learning_rate * (
            floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        )

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = math.inf, schedule.epochs, None
    step = 0
    for epoch in range(1, schedule.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        bar = epoch_batches(
            n,
            schedule.batch_size,
            generator=generator,
            description=f"{description} epoch {epoch}/{schedule.epochs}",
            progress=progress,
        )
        for idx in bar:
            xb = x[idx].to(device)
            yb = y[idx].to(device) if y is not None else None
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = loss_fn(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}")
        record = {"epoch": float(epoch), "train_loss": total / count}
        if validate is not None:
            model.eval()
            score = validate()
            record["validation"] = score
            if score < best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
        record["seconds"] = time.perf_counter() - epoch_started
        history.append(record)
        log.info("%s %s", description, " ".join(f"{k}={v:.5g}" for k, v in record.items()))
        if schedule.patience is not None and validate is not None and epoch - best_epoch >= schedule.patience:
            log.info(
                "%s: no improvement for %d epochs, stopping at epoch %d",
                description,
                schedule.patience,
                epoch,
            )
            break
        if deadline is not None and time.monotonic() > deadline and epoch < schedule.epochs:
            log.info("%s: time budget spent, stopping at epoch %d (best: %d)", description, epoch, best_epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch
