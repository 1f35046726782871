"""Restricted Boltzmann machines trained by contrastive divergence.

Hinton, "An efficient way to learn deep generative models", slides 8-13 (RBMs, CD-1), 62-65 (a linear
top layer for real-valued codes) and 78 (the constrained-Poisson / replicated-softmax visible layer
for word counts).

All RBMs here share one parametrisation and one learning rule:

    W: (n_visible, n_hidden)    visible_bias: (n_visible,)    hidden_bias: (n_hidden,)

and are trained by minimising the CD-k surrogate

    loss(v0) = mean_b F(v0_b) - mean_b F(vk_b),     vk = k steps of alternating Gibbs sampling from v0,

where F is the free energy, log p(v) = -F(v) - log Z. Its gradient with vk held fixed is exactly the
CD-k update  <v h>_data - <v h>_recon  (with hidden *probabilities*, as in the slides), so any torch
optimiser (SGD with momentum and weight decay) applies the textbook rule and the math stays in one
place: `free_energy`. No I/O here; the training loop lives in `training/`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RBM(nn.Module):
    """Base class: binary (logistic) or Gaussian (linear) hidden units over some visible layer.

    Subclasses define the visible layer: `mean_visibles`, `sample_visibles` and `visible_energy`.

    Parameters
    ----------
    n_visible, n_hidden : layer sizes.
    hidden_units : "binary" for stochastic logistic units, "gaussian" for linear units with unit-variance
        Gaussian noise (the 30-D code layer of the image autoencoder, slide 63).
    init_std : standard deviation of the initial weights (small, so that hidden units start unsaturated).
    generator : the random numbers the initial weights W ~ N(0, init_std^2) are drawn from; None draws
        from torch's default generator (what `training.seed.set_seed` seeds).
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        hidden_units: str = "binary",
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if hidden_units not in ("binary", "gaussian"):
            raise ValueError(f"hidden_units must be 'binary' or 'gaussian', got {hidden_units!r}")
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        self.hidden_units = hidden_units
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden, generator=generator) * init_std)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))

    # ----- hidden layer -------------------------------------------------------------------------
    def hidden_input(self, v: Tensor) -> Tensor:
        """Total input to the hidden units, x = v W + c.  v: (B, n_visible) -> (B, n_hidden)."""
        return v @ self.W + self.hidden_bias

    def mean_hiddens(self, v: Tensor) -> Tensor:
        """E[h | v]: sigmoid(x) for binary units, x itself for Gaussian units.  (B, n_hidden)."""
        x = self.hidden_input(v)
        return torch.sigmoid(x) if self.hidden_units == "binary" else x

    def sample_hiddens(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """h ~ p(h | v): Bernoulli(sigmoid(x)) or N(x, 1).  (B, n_hidden)."""
        mean = self.mean_hiddens(v)
        if self.hidden_units == "binary":
            return torch.bernoulli(mean, generator=generator)
        return mean + torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def hidden_free_energy(self, v: Tensor) -> Tensor:
        """-log sum_h exp(-E_hidden(v, h)):  -sum_j softplus(x_j) (binary) or -sum_j x_j^2/2 (Gaussian).

        Returns (B,).
        """
        x = self.hidden_input(v)
        if self.hidden_units == "binary":
            return -F.softplus(x).sum(dim=1)
        return -0.5 * (x * x).sum(dim=1)

    # ----- visible layer (subclasses) -----------------------------------------------------------
    def mean_visibles(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample_visibles(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def visible_energy(self, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The part of the energy that involves v alone, e.g. -v . b.  Returns (B,)."""
        raise NotImplementedError

    # ----- shared learning rule ------------------------------------------------------------------
    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = visible_energy(v) + hidden_free_energy(v).  v: (B, n_visible) -> (B,)."""
        return self.visible_energy(v) + self.hidden_free_energy(v)

    def gibbs(self, v: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """k steps of alternating Gibbs sampling, v -> h -> v', returning the last visible *means*.

        Hidden states are sampled (so the chain cannot copy its input); the final reconstruction is the
        mean-field one, which gives a lower-variance negative phase (Hinton's practical guide, sec. 3).
        """
        for step in range(k):
            h = self.sample_hiddens(v, generator)
            v = self.mean_visibles(h) if step == k - 1 else self.sample_visibles(h, generator)
        return v

    def contrastive_divergence_loss(
        self, v0: Tensor, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The CD-k surrogate loss and the reconstructions.

        loss = mean F(v0) - mean F(vk).  Its gradient w.r.t. (W, b, c) is minus the CD-k update.
        Returns (loss: scalar tensor, vk: (B, n_visible) detached reconstructions).
        """
        with torch.no_grad():
            vk = self.gibbs(v0, k, generator)
        loss = self.free_energy(v0).mean() - self.free_energy(vk).mean()
        return loss, vk

    def reconstruction_error(self, v: Tensor) -> Tensor:
        """Mean squared error per example between v and its mean-field reconstruction.  Scalar."""
        with torch.no_grad():
            recon = self.mean_visibles(self.mean_hiddens(v))
            return ((v - recon) ** 2).sum(dim=1).mean()


class BernoulliRBM(RBM):
    """Binary (logistic) visible units: p(v_i = 1 | h) = sigmoid(b_i + W_i . h).

    Energy E(v, h) = -v.b - h.c - v W h (binary hidden) or, with Gaussian hidden units,
    E(v, h) = -v.b + |h - c|^2/2 - v W h.  Real values in [0, 1] (pixel intensities, the
    probabilities of the layer below) are used as visible probabilities, as in the slides.
    """

    def mean_visibles(self, h: Tensor) -> Tensor:
        return torch.sigmoid(h @ self.W.T + self.visible_bias)

    def sample_visibles(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean_visibles(h), generator=generator)

    def visible_energy(self, v: Tensor) -> Tensor:
        return -(v @ self.visible_bias)


class ConstrainedPoissonRBM(RBM):
    """Word-count visible layer: the constrained-Poisson / replicated-softmax RBM (slide 78).

    A document is a count vector v (B, V) of length N = sum_i v_i.  Given the hidden units the counts
    are N draws from one softmax over the vocabulary (the Poisson rates constrained to sum to N):

        E[v | h] = N * softmax(b + W h)                                  (B, V)

    and bottom-up the hidden units see the counts themselves (N times the word distribution):

        p(h_j = 1 | v) = sigmoid(v . W_j + s(N) c_j)                      (B, H)

    Hidden-bias scaling s(N): with `scale_hidden_bias=True` (the replicated-softmax choice,
    Salakhutdinov & Hinton 2009) s(N) = N, so a document is N replicas of one softmax unit that all
    share the hidden bias, and the bias keeps pace with the input x = v W, which also grows like N;
    otherwise s(N) = 1 as in the constrained-Poisson model of the semantic-hashing paper.
    Energy:  E(v, h) = -v.b - s(N) h.c - v W h.

    N is not a function of h: the visible-layer methods take the documents' lengths (B, 1) as
    `lengths`, and `gibbs` passes its starting documents' lengths to every step of the chain.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        scale_hidden_bias: bool = True,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        super().__init__(n_visible, n_hidden, hidden_units="binary", init_std=init_std, generator=generator)
        self.scale_hidden_bias = scale_hidden_bias

    @staticmethod
    def document_lengths(v: Tensor) -> Tensor:
        """N for each document: (B, V) -> (B, 1)."""
        return v.sum(dim=1, keepdim=True)

    def hidden_input(self, v: Tensor) -> Tensor:
        scale = self.document_lengths(v) if self.scale_hidden_bias else 1.0
        return v @ self.W + scale * self.hidden_bias

    def word_log_probs(self, h: Tensor) -> Tensor:
        """log softmax(b + W h) over the vocabulary.  (B, H) -> (B, V)."""
        return F.log_softmax(h @ self.W.T + self.visible_bias, dim=1)

    def mean_visibles(self, h: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Expected counts N * softmax(b + W h).  h (B, H), lengths N (B, 1) -> (B, V)."""
        return _required(lengths) * self.word_log_probs(h).exp()

    def sample_visibles(
        self, h: Tensor, generator: torch.Generator | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """Counts drawn as N words from softmax(b + W h) (a multinomial per document).  (B, V)."""
        probs = self.word_log_probs(h).exp()
        n_words = _required(lengths).squeeze(1).round().long()  # (B,)
        counts = torch.zeros_like(probs)
        max_len = int(n_words.max().item()) if n_words.numel() else 0
        if max_len == 0:
            return counts
        words = torch.multinomial(probs, max_len, replacement=True, generator=generator)  # (B, max_len)
        keep = torch.arange(max_len, device=h.device)[None, :] < n_words[:, None]
        counts.scatter_add_(1, words, keep.to(probs.dtype))
        return counts

    def visible_energy(self, v: Tensor) -> Tensor:
        return -(v @ self.visible_bias)

    def gibbs(self, v: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """As RBM.gibbs, with every reconstruction keeping its document's length N."""
        lengths = self.document_lengths(v)
        for step in range(k):
            h = self.sample_hiddens(v, generator)
            if step == k - 1:
                v = self.mean_visibles(h, lengths)
            else:
                v = self.sample_visibles(h, generator, lengths)
        return v

    def reconstruction_error(self, v: Tensor) -> Tensor:
        """Mean cross-entropy, in nats per word, of the observed words under the reconstructed softmax."""
        with torch.no_grad():
            log_probs = self.word_log_probs(self.mean_hiddens(v))
            return -(v * log_probs).sum() / v.sum().clamp_min(1.0)


def _required(lengths: Tensor | None) -> Tensor:
    if lengths is None:
        raise ValueError("a constrained-Poisson reconstruction needs the documents' lengths N (B, 1)")
    return lengths
