"""The document autoencoder: unrolling reproduces the RBM stack, gradients check numerically."""

from __future__ import annotations

import torch

from models.autoencoder import DeepAutoencoder
from models.dbn import up_pass
from models.rbm import BernoulliRBM, ConstrainedPoissonRBM


def random_stack(scale_hidden_bias: bool, seed: int = 0) -> list:
    torch.manual_seed(seed)
    rbms = [
        ConstrainedPoissonRBM(12, 8, scale_hidden_bias=scale_hidden_bias),
        BernoulliRBM(8, 6),
        BernoulliRBM(6, 4),
    ]
    with torch.no_grad():
        for rbm in rbms:  # away from the near-zero initialisation, so that a mismatch would show
            rbm.W.normal_(0, 0.5)
            rbm.hidden_bias.normal_(0, 0.5)
            rbm.visible_bias.normal_(0, 0.5)
    return rbms


def counts(n: int = 5, vocab: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.poisson(torch.full((n, vocab), 1.5), generator=torch.Generator().manual_seed(seed))


def test_unrolled_encoder_equals_mean_field_up_pass() -> None:
    for scale in (True, False):
        rbms = random_stack(scale)
        model = DeepAutoencoder.from_rbms(rbms)
        v = counts()
        torch.testing.assert_close(model.encode(v), up_pass(rbms, v))
        torch.testing.assert_close(model.codes(v), up_pass(rbms, v) > 0.5)


def test_decoder_starts_as_transpose_and_is_untied() -> None:
    rbms = random_stack(False)
    model = DeepAutoencoder.from_rbms(rbms)
    for layer, rbm in enumerate(rbms):
        torch.testing.assert_close(model.decoder_weights[layer], rbm.W.T)
        torch.testing.assert_close(model.decoder_biases[layer], rbm.visible_bias)
    with torch.no_grad():
        model.decoder_weights[0].add_(1.0)
    torch.testing.assert_close(model.encoder_weights[0], rbms[0].W)  # an independent copy
    # the top decoder layer is the mean-field down-pass of the top RBM
    code = torch.rand(3, 4)
    torch.testing.assert_close(
        torch.sigmoid(code @ model.decoder_weights[2] + model.decoder_biases[2]), rbms[2].mean_visibles(code)
    )


def test_reconstruction_is_a_distribution_and_loss_is_cross_entropy() -> None:
    model = DeepAutoencoder.from_rbms(random_stack(True))
    v = counts()
    log_p = model(v)
    torch.testing.assert_close(log_p.exp().sum(dim=1), torch.ones(len(v)))
    expected = -((v / v.sum(1, keepdim=True)) * log_p).sum(1).mean()
    torch.testing.assert_close(model.reconstruction_loss(v), expected)
    dropped = v * (torch.arange(v.shape[1]) % 2 == 0)  # a corrupted input still targets the whole document
    expected = -((v / v.sum(1, keepdim=True)) * model(dropped)).sum(1).mean()
    torch.testing.assert_close(model.reconstruction_loss(dropped, target=v), expected)


def test_gradients_check_numerically() -> None:
    model = DeepAutoencoder.from_rbms(random_stack(True)).double()
    v = counts(n=3).double()
    noise = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 4
    params = list(model.parameters())

    def loss(*values: torch.Tensor) -> torch.Tensor:
        state = {name: value for (name, _), value in zip(model.named_parameters(), values, strict=True)}
        log_p = torch.func.functional_call(model, state, (v, noise))
        return -((v / v.sum(1, keepdim=True)) * log_p).sum(1).mean()

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5)


def test_noise_pushes_codes_but_not_the_noise_free_bits() -> None:
    model = DeepAutoencoder.from_rbms(random_stack(False))
    v = counts()
    big = torch.full((len(v), 4), 50.0)
    assert torch.all(model.encode(v, big) > 0.99)
    torch.testing.assert_close(model.codes(v), model.code_input(v) > 0)
