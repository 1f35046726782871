"""Sparse coding: ISTA/FISTA inference, Predictive Sparse Decomposition (PSD) and LISTA (seed 004).

Notation (rows are examples, as everywhere in this project):

    Y: (B, n) inputs          D: (n, m) dictionary, unit-norm columns (atoms)          Z: (B, m) codes

A code reconstructs its input as Y_hat = Z D^T. The sparse-coding energy of (Y, Z) is

    E(Y, Z) = 1/2 ||Y - Z D^T||^2 + lam ||Z||_1                                          (Olshausen & Field)

and the optimal code Z* = argmin_Z E(Y, Z) has no closed form. ISTA (Daubechies et al. 2004) is the
proximal-gradient iteration on E:

    Z <- h_{lam/L}( Z + (1/L) (Y - Z D^T) D ),        h_t(x) = sign(x) max(|x| - t, 0)   (shrinkage)

with L >= the largest eigenvalue of D^T D (the Lipschitz constant of the smooth part's gradient).
FISTA (Beck & Teboulle 2009) adds Nesterov momentum and converges in O(1/k^2) instead of O(1/k).
With `nonnegative=True` codes are constrained to Z >= 0 and h_t(x) = max(x - t, 0): on digits the
atoms then come out as strokes ("digit parts", seed slide "PSD: Basis Functions on MNIST").

PSD (Kavukcuoglu, Ranzato & LeCun 2008) adds a fast encoder g_e and trains it to predict Z*:

    E_psd(Y, Z) = 1/2 ||Y - Z D^T||^2 + alpha/2 ||Z - g_e(Y)||^2 + lam ||Z||_1,    g_e(Y) = h_theta(Y W_e)

Training alternates: infer Z* = argmin_Z E_psd(Y, Z) with (F)ISTA started at g_e(Y), then take a
gradient step on D (renormalising its columns) and on the encoder (W_e, theta) with Z* held fixed.

LISTA (Gregor & LeCun 2010) reads ISTA as a recurrent net, unrolls it for K steps and learns its
matrices by backprop through time, so that K steps predict Z* better than K steps of ISTA/FISTA:

    B = Y W_e,    Z_1 = h_{theta_1}(B),    Z_{k+1} = h_{theta_{k+1}}(B + Z_k S_k)   for k = 1 .. K-1

initialised at ISTA itself (W_e = D / L, S_k = I - D^T D / L, theta_k = lam / L), so K counts
shrinkage steps exactly as ISTA/FISTA iterations are counted from Z = 0. With `untied=True` every
step has its own S_k and thresholds theta_k (as in Gregor & LeCun's unfolded net, and what lets a
short net bend each step toward Z*); tied, S_k = S and theta_k = theta. The PSD encoder is LISTA
with K = 1.

No I/O here; training loops live in training/sparse.py, numpy serving in bundles/sparse.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn


def shrink(x: Tensor, theta: Tensor | float, nonnegative: bool = False) -> Tensor:
    """Soft threshold h_theta(x) = sign(x) max(|x| - theta, 0) (or max(x - theta, 0) when nonnegative).

    The proximal operator of theta ||.||_1 (plus the indicator of z >= 0). x: (B, m); theta: scalar or (m,).
    """
    if nonnegative:
        return torch.relu(x - theta)
    return torch.sign(x) * torch.relu(x.abs() - theta)


def lipschitz_constant(dictionary: Tensor) -> float:
    """L = the largest eigenvalue of D^T D, the squared spectral norm of D: (n, m) -> float."""
    return float(torch.linalg.matrix_norm(dictionary.detach().double(), ord=2) ** 2)


def energy(y: Tensor, z: Tensor, dictionary: Tensor, lam: float) -> Tensor:
    """E(Y, Z) = 1/2 ||Y - Z D^T||^2 + lam ||Z||_1 per example.  (B, n), (B, m) -> (B,)."""
    residual = y - z @ dictionary.T
    return 0.5 * (residual**2).sum(dim=1) + lam * z.abs().sum(dim=1)


def fista_iterates(
    y: Tensor,
    dictionary: Tensor,
    lam: float,
    n_iter: int,
    *,
    lipschitz: float | None = None,
    nonnegative: bool = False,
    z0: Tensor | None = None,
    prior: Tensor | None = None,
    alpha: float = 0.0,
    momentum: bool = True,
) -> Iterator[Tensor]:
    """Yield the code after each of `n_iter` FISTA (or, with momentum=False, ISTA) iterations.

    Minimises 1/2 ||Y - Z D^T||^2 + alpha/2 ||Z - prior||^2 + lam ||Z||_1 from Z = z0 (zeros by
    default). The gradient of the smooth part is -(Y - Z D^T) D + alpha (Z - prior) = Z G - Y D +
    alpha (Z - prior) with G = D^T D, computed through G (m x m) when that is cheaper than going back
    to pixel space twice. y: (B, n), dictionary: (n, m); yields (B, m).
    """
    n, m = dictionary.shape
    step = 1.0 / ((lipschitz if lipschitz is not None else lipschitz_constant(dictionary)) + alpha)
    threshold = lam * step
    yd = y @ dictionary  # (B, m)
    gram = dictionary.T @ dictionary if m < 2 * n else None  # (m, m)
    z = torch.zeros_like(yd) if z0 is None else z0
    p, t = z, 1.0
    for _ in range(n_iter):
        grad = (p @ gram if gram is not None else (p @ dictionary.T) @ dictionary) - yd
        if prior is not None and alpha > 0:
            grad = grad + alpha * (p - prior)
        z_next = shrink(p - step * grad, threshold, nonnegative)
        if momentum:
            t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            p = z_next + ((t - 1.0) / t_next) * (z_next - z)
            t = t_next
        else:
            p = z_next
        z = z_next
        yield z


def fista(y: Tensor, dictionary: Tensor, lam: float, n_iter: int, **options: object) -> Tensor:
    """The code after `n_iter` FISTA iterations (options as `fista_iterates`).  (B, n) -> (B, m)."""
    z = torch.zeros(y.shape[0], dictionary.shape[1], dtype=y.dtype, device=y.device)
    for z in fista_iterates(y, dictionary, lam, n_iter, **options):  # type: ignore[arg-type]  # noqa: B007
        pass
    return z


def ista(y: Tensor, dictionary: Tensor, lam: float, n_iter: int, **options: object) -> Tensor:
    """The code after `n_iter` ISTA iterations (no momentum).  (B, n) -> (B, m)."""
    return fista(y, dictionary, lam, n_iter, momentum=False, **options)


class LISTA(nn.Module):
    """K unrolled shrinkage steps with learned W_e (n, m), lateral inhibition S and thresholds theta.

    Tied: S (m, m) and theta (m,) shared by all steps. Untied: S (K-1, m, m), one matrix per step
    after the first, and theta (K, m), one threshold vector per step. `steps=1` has no S: that is
    the PSD encoder g_e(Y) = h_theta(Y W_e).
    """

    def __init__(
        self, n_inputs: int, n_atoms: int, steps: int, *, nonnegative: bool = False, untied: bool = False
    ):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.n_inputs, self.n_atoms, self.steps, self.nonnegative = n_inputs, n_atoms, steps, nonnegative
        self.untied = untied and steps > 1
        self.W_e = nn.Parameter(torch.zeros(n_inputs, n_atoms))
        s_shape = (steps - 1, n_atoms, n_atoms) if self.untied else (n_atoms, n_atoms)
        self.S = nn.Parameter(torch.zeros(s_shape)) if steps > 1 else None
        self.theta = nn.Parameter(torch.zeros((steps, n_atoms) if self.untied else (n_atoms,)))

    @torch.no_grad()
    def init_from_dictionary(self, dictionary: Tensor, lam: float, lipschitz: float | None = None) -> LISTA:
        """Set the weights so that the net computes exactly `steps` ISTA iterations from Z = 0."""
        big_l = lipschitz if lipschitz is not None else lipschitz_constant(dictionary)
        self.W_e.copy_(dictionary / big_l)
        if self.S is not None:
            eye = torch.eye(self.n_atoms, dtype=dictionary.dtype, device=dictionary.device)
            self.S.copy_((eye - dictionary.T @ dictionary / big_l).expand_as(self.S))
        self.theta.fill_(lam / big_l)
        return self

    def step_weights(self, k: int) -> tuple[Tensor | None, Tensor]:
        """(S used to enter step k, theta_k) for k = 0 .. K-1 (step 0 has no S)."""
        if not self.untied:
            return (self.S if k > 0 else None), self.theta
        assert self.S is not None
        return (self.S[k - 1] if k > 0 else None), self.theta[k]

    def iterates(self, y: Tensor) -> list[Tensor]:
        """Z_1 .. Z_K.  y: (B, n) -> K tensors (B, m)."""
        b = y @ self.W_e  # (B, m)
        z = shrink(b, self.step_weights(0)[1], self.nonnegative)
        out = [z]
        for k in range(1, self.steps):
            s, theta = self.step_weights(k)
            assert s is not None
            z = shrink(b + z @ s, theta, self.nonnegative)
            out.append(z)
        return out

    def forward(self, y: Tensor) -> Tensor:
        """Z_K, the code after the last step.  (B, n) -> (B, m)."""
        return self.iterates(y)[-1]


class PSD(nn.Module):
    """Predictive Sparse Decomposition: dictionary D (n, m) with unit-norm columns and encoder g_e.

    Parameters
    ----------
    n_inputs, n_atoms : n and m; m > n makes the dictionary overcomplete.
    lam : weight of the L1 sparsity penalty.
    alpha : weight of the code-prediction term alpha/2 ||Z - g_e(Y)||^2.
    nonnegative : constrain codes to be >= 0.
    """

    def __init__(
        self, n_inputs: int, n_atoms: int, *, lam: float, alpha: float = 1.0, nonnegative: bool = False
    ):
        super().__init__()
        self.n_inputs, self.n_atoms = n_inputs, n_atoms
        self.lam, self.alpha, self.nonnegative = lam, alpha, nonnegative
        self.dictionary = nn.Parameter(torch.randn(n_inputs, n_atoms))
        self.encoder = LISTA(n_inputs, n_atoms, steps=1, nonnegative=nonnegative)
        self.normalize_dictionary()

    @torch.no_grad()
    def normalize_dictionary(self) -> None:
        """Project every atom (column of D) back onto the unit sphere: the energy's scale is fixed by it."""
        self.dictionary.div_(self.dictionary.norm(dim=0, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def init_encoder(self, lipschitz: float | None = None) -> None:
        """Start g_e at one ISTA step on the current dictionary."""
        self.encoder.init_from_dictionary(self.dictionary, self.lam, lipschitz)

    def predict(self, y: Tensor) -> Tensor:
        """The encoder's code g_e(Y) = h_theta(Y W_e).  (B, n) -> (B, m)."""
        codes: Tensor = self.encoder(y)
        return codes

    @torch.no_grad()
    def infer(self, y: Tensor, n_iter: int, *, lipschitz: float | None = None) -> Tensor:
        """Z* = argmin_Z E_psd(Y, Z), by `n_iter` FISTA iterations started at the prediction.  (B, m)."""
        prediction = self.predict(y)
        return fista(
            y,
            self.dictionary,
            self.lam,
            n_iter,
            lipschitz=lipschitz,
            nonnegative=self.nonnegative,
            z0=prediction,
            prior=prediction,
            alpha=self.alpha,
        )

    def reconstruct(self, z: Tensor) -> Tensor:
        """Y_hat = Z D^T.  (B, m) -> (B, n)."""
        return z @ self.dictionary.T

    def decoder_loss(self, y: Tensor, z: Tensor) -> Tensor:
        """1/2 ||Y - Z D^T||^2 averaged over the batch, with Z fixed: its gradient updates D."""
        return 0.5 * ((y - self.reconstruct(z)) ** 2).sum(dim=1).mean()

    def encoder_loss(self, y: Tensor, z: Tensor) -> Tensor:
        """alpha/2 ||Z - g_e(Y)||^2 averaged over the batch, with Z fixed: updates W_e and theta."""
        return 0.5 * self.alpha * ((z - self.predict(y)) ** 2).sum(dim=1).mean()
