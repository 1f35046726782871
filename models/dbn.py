"""Deep belief nets for digit recognition (Hinton, Osindero & Teh 2006; seed slides 33-37, 52-54).

Two recognisers share the greedy stack 784-500-500 of binary RBMs (pixels in [0, 1] used as
probabilities):

* **Fine-tuned DBN** ("a generative model of unlabelled digits followed by gentle backpropagation",
  1.15% in the seed): a third RBM 500-2000 on top, then the stack is unrolled into a feed-forward net
  784-500-500-2000 with sigmoid units, a 10-way softmax is added and everything is fine-tuned by
  backprop (`DBNClassifier`).
* **Generative DBN** (slide 37, 1.25% in the seed): the top RBM models the 500 features jointly with
  10 softmax label units, v = [h2, y] (510) <-> 2000 hidden (`LabelledRBM`). A digit is recognised by
  the free energy of each label given the up-pass:  p(y | x) = softmax_y(-F([h2(x), e_y])).

No I/O here; training loops are in `training/digits.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.rbm import RBM, BernoulliRBM


def up_pass(rbms: Sequence[RBM], v: Tensor) -> Tensor:
    """Mean-field bottom-up pass: the hidden probabilities of the last RBM.  (B, n_in) -> (B, n_out)."""
    for rbm in rbms:
        v = rbm.mean_hiddens(v)
    return v


class LabelledRBM(BernoulliRBM):
    """The top-level associative memory of slide 37: binary features plus one softmax label group.

    Visible vector v = [f, y]: f (B, n_features) binary, y (B, n_labels) one-hot. Energy
    E(v, h) = -v.b - h.c - v W h with W: (n_features + n_labels, n_hidden), so the free energy of a
    feature vector with label l is

        F(f, l) = -f.b_f - b_l - sum_j softplus(c_j + f.W_f[:, j] + W_l[l, j])          (B,) per label

    Gibbs sampling treats the label block as one softmax unit (sampled one-hot); the CD learning rule
    is the base class's. With `discriminative_weight` a > 0 the training loss becomes the hybrid
    objective of Larochelle & Bengio (2008): CD loss + a * cross-entropy of p(y | f) = softmax(-F(f, .)),
    whose gradient is exact (ten free energies), which sharpens the label free energies for
    recognition while the generative term keeps the model of the joint density.
    """

    def __init__(
        self,
        n_features: int,
        n_labels: int,
        n_hidden: int,
        *,
        discriminative_weight: float = 0.0,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            n_features + n_labels, n_hidden, hidden_units="binary", init_std=init_std, generator=generator
        )
        self.n_features = n_features
        self.n_labels = n_labels
        self.discriminative_weight = discriminative_weight

    def mean_visibles(self, h: Tensor) -> Tensor:
        """[sigmoid(features), softmax(labels)].  (B, n_hidden) -> (B, n_features + n_labels)."""
        x = h @ self.W.T + self.visible_bias
        f, y = x[:, : self.n_features], x[:, self.n_features :]
        return torch.cat([torch.sigmoid(f), torch.softmax(y, dim=1)], dim=1)

    def sample_visibles(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = self.mean_visibles(h)
        f = torch.bernoulli(mean[:, : self.n_features], generator=generator)
        label = torch.multinomial(mean[:, self.n_features :], 1, generator=generator).squeeze(1)
        return torch.cat([f, F.one_hot(label, self.n_labels).to(f.dtype)], dim=1)

    def label_free_energies(self, features: Tensor) -> Tensor:
        """F(f, l) for every label l.  features: (B, n_features) -> (B, n_labels)."""
        w_f, w_y = self.W[: self.n_features], self.W[self.n_features :]  # (n_f, H), (L, H)
        b_f, b_y = self.visible_bias[: self.n_features], self.visible_bias[self.n_features :]
        x = (features @ w_f + self.hidden_bias)[:, None, :] + w_y[None]  # (B, L, H)
        return -(features @ b_f)[:, None] - b_y[None] - F.softplus(x).sum(dim=2)

    def label_log_probs(self, features: Tensor) -> Tensor:
        """log p(y | f) = log_softmax(-F(f, .)).  (B, n_features) -> (B, n_labels)."""
        return F.log_softmax(-self.label_free_energies(features), dim=1)

    def contrastive_divergence_loss(
        self, v0: Tensor, k: int = 1, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """CD-k loss, plus the weighted discriminative cross-entropy when `discriminative_weight` > 0."""
        loss, vk = super().contrastive_divergence_loss(v0, k, generator)
        if self.discriminative_weight > 0:
            labels = v0[:, self.n_features :].argmax(dim=1)
            nll = F.nll_loss(self.label_log_probs(v0[:, : self.n_features]), labels)
            loss = loss + self.discriminative_weight * nll
        return loss, vk


class GenerativeDBN(nn.Module):
    """Lower RBMs (784-500-500) plus a `LabelledRBM` (500 + 10 <-> 2000): recognition by free energy."""

    def __init__(self, lower: Sequence[BernoulliRBM], top: LabelledRBM):
        super().__init__()
        self.lower = nn.ModuleList(lower)
        self.top = top

    def forward(self, x: Tensor) -> Tensor:
        """Label log-probabilities log p(y | x).  x: (B, 784) in [0, 1] -> (B, 10)."""
        return self.top.label_log_probs(up_pass(self.lower_rbms, x))

    @property
    def lower_rbms(self) -> list[BernoulliRBM]:
        """The lower RBMs, bottom first (`lower` as the typed list `up_pass` takes)."""
        rbms = list(self.lower)
        assert all(isinstance(rbm, BernoulliRBM) for rbm in rbms)
        return cast(list[BernoulliRBM], rbms)


class DBNClassifier(nn.Module):
    """The unrolled DBN: sigmoid layers initialised from the RBMs' recognition weights, then a softmax.

    h_l = sigmoid(h_{l-1} W_l + c_l) for each RBM l; logits = h_L V + a with V: (n_top, n_classes)
    initialised small, since the labels carry no information until fine-tuning. Optional dropout
    (Srivastava et al. 2014) on the input and hidden activities is a training-time regulariser only:
    inverted scaling leaves the inference-time net unchanged.
    """

    def __init__(
        self, layer_sizes: Sequence[int], n_classes: int, *, dropout: float = 0.0, input_dropout: float = 0.0
    ):
        super().__init__()
        self.layer_sizes = tuple(layer_sizes)
        self.dropout, self.input_dropout = dropout, input_dropout
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(layer_sizes[:-1], layer_sizes[1:], strict=True)
        )
        self.output = nn.Linear(layer_sizes[-1], n_classes)
        nn.init.normal_(self.output.weight, std=0.01)
        nn.init.zeros_(self.output.bias)

    @classmethod
    def from_rbms(cls, rbms: Sequence[BernoulliRBM], n_classes: int, **kwargs: float) -> DBNClassifier:
        """Copy each RBM's W (n_visible, n_hidden) and hidden bias into the feed-forward layers."""
        net = cls([rbms[0].n_visible] + [r.n_hidden for r in rbms], n_classes, **kwargs)
        with torch.no_grad():
            for layer, rbm in zip(net.hidden, rbms, strict=True):
                assert isinstance(layer, nn.Linear)
                layer.weight.copy_(rbm.W.T)
                layer.bias.copy_(rbm.hidden_bias)
        return net

    def features(self, x: Tensor) -> Tensor:
        """Top hidden layer.  (B, 784) -> (B, layer_sizes[-1])."""
        x = F.dropout(x, self.input_dropout, self.training)
        for layer in self.hidden:
            x = F.dropout(torch.sigmoid(layer(x)), self.dropout, self.training)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Class logits.  (B, 784) -> (B, n_classes)."""
        logits: Tensor = self.output(self.features(x))
        return logits
