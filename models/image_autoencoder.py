"""The deep image autoencoder 784-1000-500-250-30 (Hinton & Salakhutdinov 2006; seed slides 62-65).

A stack of RBMs (binary 784-1000, 1000-500, 500-250, then 250-30 with linear Gaussian code units)
is unrolled: the encoder uses each RBM's recognition weights W and hidden biases c, the decoder the
transposed generative weights W^T and visible biases b, in reverse order. After unrolling the two
halves are untied and fine-tuned by backprop on the pixel cross-entropy

    loss(x) = -sum_i [x_i log x̂_i + (1 - x_i) log(1 - x̂_i)],   x̂ = sigmoid(decoder logits),

with the code layer linear (30 real numbers) and every other layer logistic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.rbm import BernoulliRBM


class DeepAutoencoder(nn.Module):
    """Encoder sizes[0] -> ... -> sizes[-1] (linear code) and a mirrored decoder with logistic outputs."""

    def __init__(self, layer_sizes: Sequence[int]):
        super().__init__()
        self.layer_sizes = tuple(layer_sizes)
        pairs = list(zip(layer_sizes[:-1], layer_sizes[1:], strict=True))
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.decoder = nn.ModuleList(nn.Linear(b, a) for a, b in reversed(pairs))

    @classmethod
    def from_rbms(cls, rbms: Sequence[BernoulliRBM]) -> DeepAutoencoder:
        """Unroll a pretrained stack: encoder layer l gets (W_l, c_l), decoder layer L-1-l (W_l^T, b_l)."""
        net = cls([rbms[0].n_visible] + [r.n_hidden for r in rbms])
        with torch.no_grad():
            for enc, dec, rbm in zip(net.encoder, reversed(net.decoder), rbms, strict=True):
                assert isinstance(enc, nn.Linear) and isinstance(dec, nn.Linear)
                enc.weight.copy_(rbm.W.T)
                enc.bias.copy_(rbm.hidden_bias)
                dec.weight.copy_(rbm.W)
                dec.bias.copy_(rbm.visible_bias)
        return net

    def encode(self, x: Tensor) -> Tensor:
        """Codes.  (B, 784) -> (B, code_size); the last encoder layer is linear."""
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i < len(self.encoder) - 1:
                x = torch.sigmoid(x)
        return x

    def decode_logits(self, code: Tensor) -> Tensor:
        """Pre-sigmoid pixel reconstructions.  (B, code_size) -> (B, 784)."""
        for i, layer in enumerate(self.decoder):
            code = layer(code)
            if i < len(self.decoder) - 1:
                code = torch.sigmoid(code)
        return code

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction logits.  (B, 784) -> (B, 784)."""
        return self.decode_logits(self.encode(x))

    def loss(self, x: Tensor) -> Tensor:
        """Pixel cross-entropy summed over pixels, averaged over the batch (the fine-tuning objective)."""
        return F.binary_cross_entropy_with_logits(self(x), x, reduction="sum") / x.shape[0]

    @torch.no_grad()
    def squared_error(self, x: Tensor) -> Tensor:
        """Squared reconstruction error per image, summed over pixels.  (B, 784) -> (B,)."""
        return ((torch.sigmoid(self(x)) - x) ** 2).sum(dim=1)
