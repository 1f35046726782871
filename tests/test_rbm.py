"""RBM invariants on tiny structured data (fixed seeds, seconds)."""

from __future__ import annotations

import pytest
import torch

from models.rbm import BernoulliRBM, ConstrainedPoissonRBM
from training.pretrain import CDSchedule, train_rbm


def prototype_data(n: int, n_visible: int, seed: int = 0) -> torch.Tensor:
    """Binary vectors drawn from 4 random prototypes with 5% of bits flipped."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(4, n_visible, generator=g) > 0.5).float()
    data = prototypes[torch.randint(0, 4, (n,), generator=g)]
    return torch.where(torch.rand(data.shape, generator=g) < 0.05, 1 - data, data)


def topic_counts(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Word counts from 3 topics, each concentrated on its own third of the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.full((3, vocab), 0.1)
    for t in range(3):
        topics[t, t * vocab // 3 : (t + 1) * vocab // 3] = 5.0
    topics /= topics.sum(1, keepdim=True)
    which = torch.randint(0, 3, (n,), generator=g)
    lengths = torch.randint(20, 60, (n,), generator=g)
    counts = torch.zeros(n, vocab)
    for i in range(n):
        words = torch.multinomial(topics[which[i]], int(lengths[i]), replacement=True, generator=g)
        counts[i].index_add_(0, words, torch.ones(len(words)))
    return counts


def test_cd_lowers_reconstruction_error_bernoulli() -> None:
    torch.manual_seed(0)
    data = prototype_data(2000, 30)
    rbm = BernoulliRBM(30, 8)
    before = float(rbm.reconstruction_error(data))
    history = train_rbm(
        rbm,
        data,
        CDSchedule(epochs=4, learning_rate=0.1),
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    after = float(rbm.reconstruction_error(data))
    assert after < 0.5 * before
    assert all(torch.isfinite(p).all() for p in rbm.parameters())
    assert len(history) == 4


@pytest.mark.parametrize("scale_hidden_bias", [True, False])
def test_cd_lowers_word_cross_entropy_constrained_poisson(scale_hidden_bias: bool) -> None:
    torch.manual_seed(0)
    counts = topic_counts(600, 30)
    rbm = ConstrainedPoissonRBM(30, 6, scale_hidden_bias=scale_hidden_bias)
    before = float(rbm.reconstruction_error(counts))
    train_rbm(
        rbm,
        counts,
        CDSchedule(epochs=5, learning_rate=0.01),
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert float(rbm.reconstruction_error(counts)) < before - 0.05


def test_constrained_poisson_reconstructions_keep_document_length() -> None:
    counts = topic_counts(20, 12)
    rbm = ConstrainedPoissonRBM(12, 4)
    g = torch.Generator().manual_seed(0)
    mean = rbm.gibbs(counts, k=1, generator=g)
    torch.testing.assert_close(mean.sum(1), counts.sum(1))
    sampled = rbm.gibbs(counts, k=2, generator=g)  # the inner step samples N words per document
    torch.testing.assert_close(sampled.sum(1), counts.sum(1))


def test_constrained_poisson_rbm_keeps_no_chain_state() -> None:
    """Document lengths are passed, not stored: a reconstruction without them is refused."""
    counts = topic_counts(8, 12)
    rbm = ConstrainedPoissonRBM(12, 4)
    h = rbm.mean_hiddens(counts)
    with pytest.raises(ValueError, match="lengths"):
        rbm.mean_visibles(h)
    lengths = rbm.document_lengths(counts)
    torch.testing.assert_close(rbm.mean_visibles(h, lengths).sum(1, keepdim=True), lengths)
    rbm.gibbs(counts, k=2, generator=torch.Generator().manual_seed(0))
    # Besides nn.Module's own bookkeeping, the instance holds its hyperparameters and nothing else.
    own = {name for name in vars(rbm) if name not in vars(torch.nn.Module())}
    assert own == {"n_visible", "n_hidden", "hidden_units", "scale_hidden_bias"}


@pytest.mark.parametrize("cls", [BernoulliRBM, ConstrainedPoissonRBM])
def test_initial_weights_come_from_the_generator_passed_in(cls: type[BernoulliRBM]) -> None:
    first = cls(10, 3, generator=torch.Generator().manual_seed(7))
    second = cls(10, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first.W, second.W)
    torch.manual_seed(7)  # without one: torch's default generator, as seeded by set_seed
    torch.testing.assert_close(cls(10, 3).W, first.W)


def test_gaussian_hidden_units_are_linear_means() -> None:
    rbm = BernoulliRBM(10, 3, hidden_units="gaussian")
    v = torch.rand(5, 10)
    torch.testing.assert_close(rbm.mean_hiddens(v), v @ rbm.W + rbm.hidden_bias)


def test_training_does_not_mutate_input() -> None:
    data = prototype_data(200, 10)
    copy = data.clone()
    train_rbm(BernoulliRBM(10, 4), data, CDSchedule(epochs=1), progress=False)
    assert torch.equal(data, copy)


def test_stacked_layer_trains_on_the_up_pass_of_the_layers_below() -> None:
    """train_or_resume computes the layer's input once (the up-pass below): the same run as training
    on those features directly, with the same generator."""
    from models.dbn import up_pass
    from training.stack import train_or_resume

    data = prototype_data(300, 20)
    below = [BernoulliRBM(20, 12, generator=torch.Generator().manual_seed(1))]
    schedule = CDSchedule(epochs=3, batch_size=32, learning_rate=0.1)
    stacked = BernoulliRBM(12, 6, generator=torch.Generator().manual_seed(2))
    history = train_or_resume(
        stacked,
        "layer1",
        data,
        schedule,
        below=below,
        checkpoint_dir=None,
        key="k",
        validation=data[:50],
        generator=torch.Generator().manual_seed(3),
        progress=False,
    )
    direct = BernoulliRBM(12, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = up_pass(below, data)
    expected = train_rbm(
        direct,
        features,
        schedule,
        validation=features[:50],
        generator=torch.Generator().manual_seed(3),
        progress=False,
    )
    assert torch.allclose(stacked.W, direct.W, atol=1e-6)
    assert [r["free_energy_gap"] for r in history] == pytest.approx([r["free_energy_gap"] for r in expected])
