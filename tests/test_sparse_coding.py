"""Sparse coding math (models/sparse_coding.py): shrinkage, ISTA/FISTA optimality, LISTA, PSD."""

from __future__ import annotations

import pytest
import torch

from models.sparse_coding import LISTA, PSD, energy, fista, ista, lipschitz_constant, shrink


def _problem(seed: int = 0, n: int = 20, m: int = 40, batch: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, m, generator=g, dtype=torch.float64)
    d /= d.norm(dim=0, keepdim=True)
    y = torch.rand(batch, n, generator=g, dtype=torch.float64)
    return y, d


def test_shrink_is_the_soft_threshold() -> None:
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.25, 1.5]])
    assert shrink(x, 0.5).tolist() == [[-1.5, -0.0, 0.0, 0.0, 1.0]]
    assert shrink(x, 0.5, nonnegative=True).tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0]]
    assert shrink(x, torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0])).tolist() == [[-2.0, -0.5, 0.0, 0.25, 0.0]]


def test_lipschitz_constant_is_the_top_eigenvalue_of_the_gram_matrix() -> None:
    _, d = _problem()
    assert lipschitz_constant(d) == pytest.approx(float(torch.linalg.eigvalsh(d.T @ d).max()), rel=1e-9)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_fista_satisfies_the_lasso_optimality_conditions(nonnegative: bool) -> None:
    """At the minimiser of 1/2 |y - z D^T|^2 + lam |z|_1 the correlation g = (y - z D^T) D equals
    lam * sign(z_j) on active atoms and is at most lam (in absolute value, unless z >= 0) elsewhere."""
    y, d = _problem()
    lam = 0.2
    z = fista(y, d, lam, 3000, nonnegative=nonnegative)
    g = (y - z @ d.T) @ d
    active = z != 0
    assert active.any()
    assert torch.allclose(g[active], lam * torch.sign(z[active]), atol=1e-6)
    inactive = g[~active] if nonnegative else g[~active].abs()
    assert (inactive <= lam + 1e-6).all()
    if nonnegative:
        assert (z >= 0).all()
    # ISTA converges to the same codes, only more slowly
    assert torch.allclose(ista(y, d, lam, 5000, nonnegative=nonnegative), z, atol=1e-4)


def test_fista_is_ahead_of_ista_and_lowers_the_energy() -> None:
    y, d = _problem(1)
    lam = 0.1
    optimum = energy(y, fista(y, d, lam, 3000), d, lam).sum()
    start = energy(y, torch.zeros(y.shape[0], d.shape[1], dtype=y.dtype), d, lam).sum()
    gap_fista = energy(y, fista(y, d, lam, 30), d, lam).sum() - optimum
    gap_ista = energy(y, ista(y, d, lam, 30), d, lam).sum() - optimum
    assert 0 <= gap_fista < gap_ista < start - optimum


def test_fista_with_a_prior_minimises_the_psd_energy() -> None:
    """With prior p and weight alpha the optimality condition gains alpha (z - p)."""
    y, d = _problem(2)
    lam, alpha = 0.2, 1.5
    prior = torch.rand(y.shape[0], d.shape[1], dtype=y.dtype)
    z = fista(y, d, lam, 3000, prior=prior, alpha=alpha, z0=prior)
    g = (y - z @ d.T) @ d - alpha * (z - prior)
    active = z != 0
    assert torch.allclose(g[active], lam * torch.sign(z[active]), atol=1e-6)
    assert (g[~active].abs() <= lam + 1e-6).all()


@pytest.mark.parametrize("untied", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
def test_lista_starts_as_exactly_k_ista_steps(steps: int, untied: bool) -> None:
    y, d = _problem(3)
    net = LISTA(d.shape[0], d.shape[1], steps, untied=untied).double().init_from_dictionary(d, 0.1)
    assert (net.S is None) == (steps == 1)
    assert net.untied == (untied and steps > 1)
    if net.untied:
        assert net.S is not None and net.S.shape == (steps - 1, 40, 40) and net.theta.shape == (steps, 40)
    assert torch.allclose(net(y), ista(y, d, 0.1, steps), atol=1e-12)
    assert len(net.iterates(y)) == steps


def test_untied_lista_steps_use_their_own_weights() -> None:
    """Changing the last step's S and thresholds changes only the last iterate."""
    y, d = _problem(6)
    net = LISTA(d.shape[0], d.shape[1], 3, untied=True).double().init_from_dictionary(d, 0.1)
    before = net.iterates(y)
    with torch.no_grad():
        assert net.S is not None
        net.S[1].mul_(0.5)
        net.theta[2].mul_(2.0)
    after = net.iterates(y)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.allclose(before[2], after[2])


@pytest.mark.parametrize("untied", [False, True])
def test_lista_learns_to_predict_optimal_codes_better_than_ista(untied: bool) -> None:
    y, d = _problem(4, batch=100)
    lam = 0.1
    target = fista(y, d, lam, 2000, nonnegative=True)
    net = LISTA(d.shape[0], d.shape[1], 2, nonnegative=True, untied=untied)
    net = net.double().init_from_dictionary(d, lam)
    with torch.no_grad():
        before = float(((net(y) - target) ** 2).sum())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(100):
        loss = 0.5 * ((net(y) - target) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(((net(y) - target) ** 2).sum()) < 0.5 * before


def test_psd_keeps_unit_atoms_and_its_steps_lower_the_energy() -> None:
    y, _ = _problem(5, batch=100)
    torch.manual_seed(0)
    model = PSD(y.shape[1], 30, lam=0.1, nonnegative=True).double()
    assert torch.allclose(model.dictionary.norm(dim=0), torch.ones(30, dtype=y.dtype))
    model.init_encoder()

    def total_energy() -> float:
        z = model.infer(y, 200)
        return float(energy(y, z, model.dictionary, model.lam).mean())

    before = total_energy()
    opt_d = torch.optim.SGD([model.dictionary], lr=0.1)
    opt_e = torch.optim.SGD(model.encoder.parameters(), lr=0.1)
    for _ in range(50):
        z = model.infer(y, 30)
        for opt, loss in ((opt_d, model.decoder_loss(y, z)), (opt_e, model.encoder_loss(y, z))):
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.normalize_dictionary()
    assert torch.allclose(model.dictionary.norm(dim=0), torch.ones(30, dtype=y.dtype))
    assert total_energy() < before
