"""The DBN recognisers: shapes, the labelled RBM's free energies, and that training does what it claims."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.dbn import DBNClassifier, GenerativeDBN, LabelledRBM, up_pass
from models.rbm import BernoulliRBM
from training.backprop import BackpropSchedule, fine_tune
from training.pretrain import CDSchedule, train_rbm


def labelled_prototypes(
    n: int, n_features: int, n_labels: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary feature vectors from one random prototype per label, 5% of bits flipped."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(n_labels, n_features, generator=g) > 0.5).float()
    labels = torch.randint(0, n_labels, (n,), generator=g)
    data = prototypes[labels]
    return torch.where(torch.rand(data.shape, generator=g) < 0.05, 1 - data, data), labels


def test_label_free_energies_match_the_joint_free_energy() -> None:
    torch.manual_seed(0)
    rbm = LabelledRBM(12, 4, 9, init_std=0.5)
    with torch.no_grad():
        rbm.visible_bias.normal_()
        rbm.hidden_bias.normal_()
    features = torch.rand(5, 12)
    per_label = rbm.label_free_energies(features)
    assert per_label.shape == (5, 4)
    for label in range(4):
        joint = torch.cat([features, F.one_hot(torch.full((5,), label), 4).float()], dim=1)
        torch.testing.assert_close(per_label[:, label], rbm.free_energy(joint))
    torch.testing.assert_close(rbm.label_log_probs(features).exp().sum(1), torch.ones(5))


def test_labelled_rbm_samples_one_hot_labels() -> None:
    rbm = LabelledRBM(6, 3, 5)
    sample = rbm.sample_visibles(torch.rand(50, 5).round(), torch.Generator().manual_seed(0))
    assert sample.shape == (50, 9)
    torch.testing.assert_close(sample[:, 6:].sum(1), torch.ones(50))
    assert set(sample[:, :6].unique().tolist()) <= {0.0, 1.0}


def test_generative_free_energy_classification_on_toy_data() -> None:
    torch.manual_seed(0)
    features, labels = labelled_prototypes(1500, 30, 5)
    rbm = LabelledRBM(30, 5, 20)
    chance = float((rbm.label_log_probs(features).argmax(1) == labels).float().mean())
    joint = torch.cat([features, F.one_hot(labels, 5).float()], dim=1)
    train_rbm(
        rbm,
        joint,
        CDSchedule(epochs=5, learning_rate=0.1),
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    test_features, test_labels = labelled_prototypes(500, 30, 5, seed=0)
    accuracy = float((rbm.label_log_probs(test_features).argmax(1) == test_labels).float().mean())
    assert chance < 0.5 and accuracy > 0.95


def test_hybrid_objective_adds_the_discriminative_term() -> None:
    features, labels = labelled_prototypes(64, 10, 3)
    joint = torch.cat([features, F.one_hot(labels, 3).float()], dim=1)
    rbm = LabelledRBM(10, 3, 8)
    g = torch.Generator().manual_seed(0)
    plain, _ = rbm.contrastive_divergence_loss(joint, 1, torch.Generator().manual_seed(0))
    rbm.discriminative_weight = 2.0
    hybrid, _ = rbm.contrastive_divergence_loss(joint, 1, g)
    nll = F.nll_loss(rbm.label_log_probs(features), labels)
    torch.testing.assert_close(hybrid, plain + 2.0 * nll)


def test_classifier_unrolls_the_rbms() -> None:
    rbms = [BernoulliRBM(20, 8, init_std=0.3), BernoulliRBM(8, 6, init_std=0.3)]
    net = DBNClassifier.from_rbms(rbms, 4)
    x = torch.rand(7, 20)
    torch.testing.assert_close(net.features(x), up_pass(rbms, x))
    assert net(x).shape == (7, 4)
    generative = GenerativeDBN(rbms[:1], LabelledRBM(8, 4, 5))
    torch.testing.assert_close(generative(x).exp().sum(1), torch.ones(7))


def test_dropout_only_while_training() -> None:
    net = DBNClassifier([20, 8], 3, dropout=0.5, input_dropout=0.2).eval()
    x = torch.rand(4, 20)
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


def test_fine_tuning_lowers_the_loss_and_keeps_the_best_epoch() -> None:
    torch.manual_seed(0)
    x, y = labelled_prototypes(600, 40, 4)
    net = DBNClassifier([40, 16], 4)
    with torch.no_grad():
        before = float(F.cross_entropy(net(x), y))
    scores: list[float] = []

    def validate() -> float:
        with torch.no_grad():
            scores.append(float(F.cross_entropy(net(x[:100]), y[:100])))
        return scores[-1]

    history, best = fine_tune(
        net,
        lambda m, xb, yb: F.cross_entropy(m(xb), yb),
        x,
        y,
        BackpropSchedule(epochs=10, learning_rate=0.5),
        validate=validate,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert len(history) == 10 and history[-1]["train_loss"] < history[0]["train_loss"]
    with torch.no_grad():
        assert float(F.cross_entropy(net(x), y)) < 0.5 * before
    assert best == int(np.argmin(scores)) + 1
    torch.testing.assert_close(torch.tensor(validate()), torch.tensor(min(scores[:-1])))


def test_tiny_digits_run_learns(digits_run: tuple[Any, dict[str, Any]]) -> None:
    _, metrics = digits_run
    errors = metrics["validation_error"]
    assert errors["finetuned"] < 0.25 and errors["generative"] < 0.4
    pretrain = metrics["history"]["pretrain"]
    assert all(layer[-1]["reconstruction_error"] < layer[0]["reconstruction_error"] for layer in pretrain)
