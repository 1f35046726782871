"""Train and evaluate the MNIST digit recognisers (models/dbn.py) and export them as a bundle.

Pipeline (`train_digits`):
1. greedy CD pretraining of 784-500-500-2000 on the training images (labels unused);
2. generative variant: a `LabelledRBM` (500 + 10 <-> 2000) trained by CD on [up-pass, one-hot label],
   then (optionally) a few epochs of the hybrid generative + discriminative objective;
3. fine-tuned variant: the unrolled 784-500-500-2000 net plus a softmax, trained by backprop with
   the validation error picking the epoch; with `refit` it is then retrained from the pretrained weights
   on all 60,000 training images for that many epochs (Hinton, Osindero & Teh 2006 did the same);
4. the variant with the lower validation error is the bundle's default.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bundles.io import write_bundle
from bundles.vision import (
    DIGITS_FORMAT_VERSION,
    SOFTMAX_BIAS,
    SOFTMAX_WEIGHT,
    TOP_RBM_HIDDEN_BIAS,
    TOP_RBM_VISIBLE_BIAS,
    TOP_RBM_WEIGHT,
    stack_layer_names,
)
from models.dbn import DBNClassifier, GenerativeDBN, LabelledRBM
from models.rbm import BernoulliRBM
from training.backprop import BackpropSchedule, fine_tune
from training.mnist import MnistSplits
from training.pretrain import CDSchedule
from training.seed import set_seed
from training.stack import fingerprint, pretrain_stack, resolve_device, sampling_generator, train_or_resume

log = logging.getLogger(__name__)


@dataclass
class DigitsConfig:
    """Everything that determines a digits bundle (written to its config.json)."""

    layer_sizes: tuple[int, ...] = (784, 500, 500, 2000)  # pixels, then the DBN's hidden layers
    n_classes: int = 10
    n_train: int | None = None  # use only the first n training images (quick runs); None = all 50,000
    pretrain: CDSchedule = field(default_factory=lambda: CDSchedule(epochs=30, learning_rate=0.1))
    top: CDSchedule = field(
        default_factory=lambda: CDSchedule(epochs=30, learning_rate=0.1)
    )  # labelled RBM, CD
    top_hybrid: CDSchedule = field(  # then CD + discriminative term; epochs=0 leaves it purely generative
        default_factory=lambda: CDSchedule(epochs=10, learning_rate=0.01, initial_momentum_epochs=0)
    )
    discriminative_weight: float = 5.0  # weight of -log p(y|x) against the CD loss in the hybrid epochs
    finetune: BackpropSchedule = field(default_factory=lambda: BackpropSchedule(epochs=100, patience=25))
    dropout: float = 0.0  # dropout on the hidden layers during fine-tuning (0 = plain gentle backprop)
    input_dropout: float = 0.0  # dropout on the pixels during fine-tuning
    refit: bool = True  # retrain the fine-tuned net on all training images for the best epoch count
    seed: int = 0
    device: str = "auto"


PROFILES: dict[str, DigitsConfig] = {
    # about a minute on two CPU cores: the full architecture, a fifth of the data, a few epochs
    "quick": DigitsConfig(
        n_train=10_000,
        pretrain=CDSchedule(epochs=2, learning_rate=0.1, initial_momentum_epochs=1),
        top=CDSchedule(epochs=2, learning_rate=0.1, initial_momentum_epochs=1),
        top_hybrid=CDSchedule(epochs=1, learning_rate=0.01, initial_momentum_epochs=0),
        finetune=BackpropSchedule(epochs=6),
        refit=False,
    ),
    # paper scale; fine-tuned with dropout (Srivastava et al. 2014), which needs more epochs: 1.10% test error
    "full": DigitsConfig(
        dropout=0.5, input_dropout=0.2, finetune=BackpropSchedule(epochs=150, learning_rate=0.1, patience=40)
    ),
    # the same with plain "gentle backprop" as in the seed (1.28% test error here)
    "full-plain": DigitsConfig(),
}


def _labels_one_hot(y: Tensor, n_classes: int) -> Tensor:
    return F.one_hot(y, n_classes).float()


@torch.no_grad()
def error_rate(model: nn.Module, x: Tensor, y: Tensor, batch: int = 2000) -> float:
    """Fraction of rows whose highest-scoring class is not the label."""
    wrong = 0
    for start in range(0, len(x), batch):
        wrong += int((model(x[start : start + batch]).argmax(1) != y[start : start + batch]).sum())
    return wrong / len(x)


def _cross_entropy(model: nn.Module, xb: Tensor, yb: Tensor | None) -> Tensor:
    assert yb is not None
    return F.cross_entropy(model(xb), yb)


def train_digits(
    config: DigitsConfig, data: MnistSplits, out: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train both recognisers, write the bundle to `out`, and return its metrics."""
    started = time.perf_counter()
    set_seed(config.seed)
    device = resolve_device(config.device)
    generator = sampling_generator(device, config.seed)
    n = config.n_train or len(data.train_x)
    x = torch.from_numpy(data.train_x[:n]).to(device)
    y = torch.from_numpy(data.train_y[:n]).to(device)
    xv = torch.from_numpy(data.valid_x).to(device)
    yv = torch.from_numpy(data.valid_y).to(device)
    sizes = list(config.layer_sizes)
    checkpoints = out / "checkpoints"
    key = fingerprint({"sizes": sizes, "n": n, "pretrain": asdict(config.pretrain), "seed": config.seed})

    # 1. unsupervised greedy pretraining of the whole stack
    rbms = [BernoulliRBM(a, b).to(device) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    pretrain_histories = pretrain_stack(
        rbms,
        x,
        [config.pretrain] * len(rbms),
        checkpoint_dir=checkpoints,
        key=key,
        validation=xv,
        generator=generator,
        progress=progress,
    )

    # 2. generative variant: the labelled top RBM over the penultimate layer
    lower = rbms[:-1]
    top = LabelledRBM(sizes[-2], config.n_classes, sizes[-1]).to(device)
    joint = torch.cat([x, _labels_one_hot(y, config.n_classes)], dim=1)
    top_key = fingerprint([key, asdict(config.top)])
    common: dict[str, Any] = {
        "below": lower,
        "checkpoint_dir": checkpoints,
        "generator": generator,
        "progress": progress,
    }
    top_history = train_or_resume(
        top, "top_cd", joint, config.top, key=top_key, features_from=sizes[0], **common
    )
    generative = GenerativeDBN(lower, top).eval()
    valid_error = {"generative_cd": error_rate(generative, xv, yv)}
    log.info("generative DBN (CD only): validation error %.4f", valid_error["generative_cd"])
    if config.top_hybrid.epochs > 0:
        top.discriminative_weight = config.discriminative_weight
        hybrid_key = fingerprint([top_key, asdict(config.top_hybrid), config.discriminative_weight])
        top_history += train_or_resume(
            top, "top_hybrid", joint, config.top_hybrid, key=hybrid_key, features_from=sizes[0], **common
        )
        top.discriminative_weight = 0.0
    valid_error["generative"] = error_rate(generative, xv, yv)
    log.info("generative DBN: validation error %.4f", valid_error["generative"])

    # 3. fine-tuned variant: unroll, add the softmax, backprop; validation error picks the epoch
    classifier = DBNClassifier.from_rbms(
        rbms, config.n_classes, dropout=config.dropout, input_dropout=config.input_dropout
    ).to(device)
    finetune_history, best_epoch = fine_tune(
        classifier,
        _cross_entropy,
        x,
        y,
        config.finetune,
        validate=lambda: error_rate(classifier, xv, yv),
        generator=generator,
        description="fine-tune",
        progress=progress,
    )
    valid_error["finetuned"] = error_rate(classifier, xv, yv)
    log.info("fine-tuned DBN: validation error %.4f at epoch %d", valid_error["finetuned"], best_epoch)
    refit_history: list[dict[str, float]] = []
    if config.refit:
        classifier = DBNClassifier.from_rbms(
            rbms, config.n_classes, dropout=config.dropout, input_dropout=config.input_dropout
        ).to(device)
        refit_history, _ = fine_tune(
            classifier,
            _cross_entropy,
            torch.cat([x, xv]),
            torch.cat([y, yv]),
            replace(config.finetune, epochs=best_epoch, patience=None),
            generator=generator,
            description="refit on train+validation",
            progress=progress,
        )

    default = min(("finetuned", "generative"), key=lambda v: valid_error[v])
    seconds = time.perf_counter() - started
    metrics = {
        "validation_error": valid_error,
        "best_finetune_epoch": best_epoch,
        "train_seconds": seconds,
        "device": device.type,
        "history": {
            "pretrain": pretrain_histories,
            "top": top_history,
            "finetune": finetune_history,
            "refit": refit_history,
        },
    }
    config_json = {
        "format_version": DIGITS_FORMAT_VERSION,
        "kind": "digits",
        "architecture": {"layer_sizes": sizes, "n_classes": config.n_classes, "top_hidden": sizes[-1]},
        "default_variant": default,
        "seed": config.seed,
        "training": asdict(config),
        "data": {"n_train": n, "n_validation": len(xv), "refit_on_validation": config.refit},
    }
    write_bundle(out, config_json, export_weights(classifier, generative), metrics)
    log.info("digits bundle written to %s in %.0f s (default variant: %s)", out, seconds, default)
    return metrics


def export_weights(classifier: DBNClassifier, generative: GenerativeDBN) -> dict[str, np.ndarray]:
    """Both recognisers as float32 arrays in the layout documented in bundles/vision.py."""

    def arr(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32)

    weights: dict[str, np.ndarray] = {}
    for layer, linear in enumerate(classifier.hidden):
        assert isinstance(linear, nn.Linear)
        weight, bias = stack_layer_names("finetuned", layer)
        weights[weight], weights[bias] = arr(linear.weight.T), arr(linear.bias)
    weights[SOFTMAX_WEIGHT] = arr(classifier.output.weight.T)
    weights[SOFTMAX_BIAS] = arr(classifier.output.bias)
    for layer, rbm in enumerate(generative.lower_rbms):
        weight, bias = stack_layer_names("generative", layer)
        weights[weight], weights[bias] = arr(rbm.W), arr(rbm.hidden_bias)
    weights[TOP_RBM_WEIGHT] = arr(generative.top.W)
    weights[TOP_RBM_VISIBLE_BIAS] = arr(generative.top.visible_bias)
    weights[TOP_RBM_HIDDEN_BIAS] = arr(generative.top.hidden_bias)
    return weights
