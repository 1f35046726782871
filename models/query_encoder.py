"""The query encoder: a small MLP from a short text's words to the document encoders' code probabilities.

    x   = normalise_L2( ln(1 + c) * idf )        (Q,) features of the query's word counts c
    h_1 = relu(x W_1 + b_1), ..., h_{L-1}          W_1 as an `EmbeddingBag`: a query has a few words
    z   = h_{L-1} W_L + b_L                         (a + l,) logits of the address and long code units

Trained by distillation (`training.query_train`): for a short sample s of a document d (some of its
words, a sentence, its subject line) the target is the document encoders' probabilities t(d) for the
whole of d, and the loss the binary cross-entropy

    BCE(z, t) = -sum_j [ t_j ln sigmoid(z_j) + (1 - t_j) ln(1 - sigmoid(z_j)) ]

averaged over the address units and over the long units, mixed by `address_weight`. Its numpy twin
for serving is `bundles.query.QueryEncoder` (same weight layout: W_l is (n_in, n_out)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class QueryEncoderNet(nn.Module):
    """layers = [Q, h_1, ..., a + l]; `address_bits` = a (the first a outputs are the address units)."""

    def __init__(self, layers: Sequence[int], address_bits: int):
        super().__init__()
        if len(layers) < 2:
            raise ValueError(f"need at least an input and an output layer, got {list(layers)}")
        self.layers = [int(n) for n in layers]
        self.address_bits = int(address_bits)
        self.embedding = nn.EmbeddingBag(self.layers[0], self.layers[1], mode="sum")
        self.first_bias = nn.Parameter(torch.zeros(self.layers[1]))
        self.linears = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(self.layers[1:-1], self.layers[2:], strict=True)
        )
        # ||x|| = 1, so a first-layer input h_j = x . W_:j has variance sigma^2 sum_i x_i^2 = sigma^2
        nn.init.normal_(self.embedding.weight, std=1.0)

    def init_output_bias(self, mean_targets: Tensor) -> None:
        """Start every code unit at the logit of its mean target: the net first predicts the prior."""
        p = mean_targets.clamp(1e-4, 1 - 1e-4)
        bias = self._linear(len(self.linears) - 1).bias if len(self.linears) else self.first_bias
        with torch.no_grad():
            bias.copy_(torch.log(p) - torch.log1p(-p))

    def forward(self, indices: Tensor, offsets: Tensor, values: Tensor) -> Tensor:
        """Logits z (B, a + l) of a batch given as flattened CSR rows (indices, row offsets, values)."""
        h: Tensor = self.embedding(indices, offsets, per_sample_weights=values) + self.first_bias
        for linear in self.linears:
            h = linear(F.relu(h))
        return h

    def loss(self, logits: Tensor, targets: Tensor, address_weight: float = 1.0) -> Tensor:
        """(address_weight * BCE_address + BCE_long) / (address_weight + 1), each a mean per unit."""
        a = self.address_bits
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        address, long = bce[:, :a].mean(), bce[:, a:].mean()
        return (address_weight * address + long) / (address_weight + 1.0)

    def numpy_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight (n_in, n_out), bias (n_out,)) of every layer, first to last, as numpy arrays (named
        for a bundle by `bundles.query.layer_weights`)."""
        layers = [(self.embedding.weight.detach().cpu().numpy(), self.first_bias.detach().cpu().numpy())]
        for layer in range(len(self.linears)):
            linear = self._linear(layer)
            layers.append((linear.weight.detach().cpu().numpy().T, linear.bias.detach().cpu().numpy()))
        return layers

    def _linear(self, index: int) -> nn.Linear:
        linear = self.linears[index]
        assert isinstance(linear, nn.Linear)
        return linear
