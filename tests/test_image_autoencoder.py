"""The deep image autoencoder: unrolling, shapes, and that fine-tuning lowers the reconstruction error."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.dbn import up_pass
from models.image_autoencoder import DeepAutoencoder
from models.rbm import BernoulliRBM
from training.backprop import BackpropSchedule, fine_tune
from training.images import fit_binary_code


def test_unrolled_autoencoder_is_the_rbm_stack() -> None:
    torch.manual_seed(0)
    rbms = [BernoulliRBM(30, 12, init_std=0.3), BernoulliRBM(12, 4, hidden_units="gaussian", init_std=0.3)]
    net = DeepAutoencoder.from_rbms(rbms)
    x = torch.rand(6, 30)
    codes = net.encode(x)
    assert codes.shape == (6, 4) and net(x).shape == (6, 30)
    torch.testing.assert_close(codes, up_pass(rbms, x))  # linear code units: the mean of the Gaussian
    h1 = rbms[1].mean_visibles(codes)
    torch.testing.assert_close(torch.sigmoid(net.decode_logits(codes)), rbms[0].mean_visibles(h1))
    assert (codes < 0).any(), "the code layer is linear, not logistic"


def test_fine_tuning_lowers_squared_error() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(5, 40, generator=g)
    x = (
        prototypes[torch.randint(0, 5, (500,), generator=g)] + 0.05 * torch.randn(500, 40, generator=g)
    ).clamp(0, 1)
    net = DeepAutoencoder([40, 16, 3])
    before = float(net.squared_error(x).mean())
    fine_tune(
        net,
        lambda m, xb, _: m.loss(xb),
        x,
        None,
        BackpropSchedule(epochs=12, batch_size=25, optimizer="adam", learning_rate=2e-2),
        generator=g,
        progress=False,
    )
    after = float(net.squared_error(x).mean())
    assert after < 0.3 * before


def test_tiny_images_run_improves_on_the_unrolled_stack(images_run: tuple[Any, dict[str, Any]]) -> None:
    _, metrics = images_run
    mse = metrics["validation_mse"]
    assert mse["autoencoder"] < mse["pretrained"]


def test_binary_code_rotation_is_orthogonal_balanced_and_lowers_quantisation_loss() -> None:
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) + 3.0  # correlated, off-centre
    fit = fit_binary_code(codes, iterations=30)
    rotation = fit["code_rotation"].astype(np.float64)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(6), atol=1e-5)
    rotated = (codes - fit["code_mean"]) @ rotation
    np.testing.assert_allclose((rotated > fit["code_thresholds"]).mean(0), 0.5, atol=0.01)
    start = fit_binary_code(codes, iterations=0)  # PCA and the random initial rotation only
    unrotated = (codes - start["code_mean"]) @ start["code_rotation"]

    def loss(v: np.ndarray) -> float:
        return float(((np.sign(v) - v) ** 2).sum())

    scale = np.abs(rotated).mean()
    assert loss(rotated / scale) < loss(unrotated / scale)
