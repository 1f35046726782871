"""The deep autoencoder for word counts that learns binary codes (semantic hashing, slides 66-72, 78).

Salakhutdinov & Hinton, "Semantic hashing" (2009). A stack of RBMs, a `ConstrainedPoissonRBM` on the
word counts and `BernoulliRBM`s above it, e.g. 2000-500-500-128, is unrolled into an encoder and a
decoder whose weights start as the transposed encoder weights and are then untied:

    encoder   h_1 = sigmoid(v W_1 + s(N) c_1)              v: (B, V) counts, N = sum_i v_i, s(N) = N or 1
              h_l = sigmoid(h_{l-1} W_l + c_l)             l = 2 .. L-1
              z   = h_{L-1} W_L + c_L                       (B, bits) total input of the code units
              y   = sigmoid(z + noise)                      noise ~ N(0, sigma^2) while fine-tuning, else 0
    decoder   g_l = sigmoid(g_{l+1} D_l + d_l)              starting from g_L = y, D_l init W_l^T
              p   = softmax(g_2 D_1 + b_1)                  (B, V) a distribution over the vocabulary

Fine-tuning minimises the cross-entropy between the document's word distribution v / N and p,
loss = -mean_b sum_i (v_bi / N_b) log p_bi. The noise on the code units' input forces their
activities to be bimodal, so that thresholding them at 0.5 loses little: code bits = y > 0.5
(equivalently z > 0 without noise). No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.rbm import RBM, ConstrainedPoissonRBM


class DeepAutoencoder(nn.Module):
    """Encoder-decoder over word counts with a logistic code layer (see the module docstring).

    Parameters
    ----------
    layer_sizes : [V, h_1, ..., h_{L-1}, bits], e.g. [2000, 500, 500, 128].
    scale_input_bias : s(N) = N when True (the replicated-softmax first layer), else 1.

    Parameters are stored as in the RBMs, weights (n_in, n_out) used as x W + c:
    `encoder_weights[l]`, `encoder_biases[l]` for layer l+1, `decoder_weights[l]` (n_out, n_in) and
    `decoder_biases[l]` (n_in,) for its mirror image.
    """

    def __init__(self, layer_sizes: Sequence[int], *, scale_input_bias: bool = True):
        super().__init__()
        if len(layer_sizes) < 2:
            raise ValueError(f"need at least an input and a code layer, got {list(layer_sizes)}")
        self.layer_sizes = list(layer_sizes)
        self.scale_input_bias = scale_input_bias
        pairs = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True))
        self.encoder_weights = nn.ParameterList(nn.Parameter(torch.zeros(i, o)) for i, o in pairs)
        self.encoder_biases = nn.ParameterList(nn.Parameter(torch.zeros(o)) for _, o in pairs)
        self.decoder_weights = nn.ParameterList(nn.Parameter(torch.zeros(o, i)) for i, o in pairs)
        self.decoder_biases = nn.ParameterList(nn.Parameter(torch.zeros(i)) for i, _ in pairs)

    @property
    def code_bits(self) -> int:
        return self.layer_sizes[-1]

    @classmethod
    def from_rbms(cls, rbms: Sequence[RBM]) -> DeepAutoencoder:
        """Unroll a pretrained stack: encoder = (W_l, c_l), decoder = (W_l^T, b_l), as independent copies.

        `rbms[0]` must be a `ConstrainedPoissonRBM` (its hidden-bias scaling is kept); the rest map each
        layer's hidden units to the next layer's visible units.
        """
        first = rbms[0]
        if not isinstance(first, ConstrainedPoissonRBM):
            raise TypeError("the bottom RBM of a document autoencoder must be a ConstrainedPoissonRBM")
        sizes = [first.n_visible] + [rbm.n_hidden for rbm in rbms]
        for below, above in zip(rbms[:-1], rbms[1:], strict=True):
            if above.n_visible != below.n_hidden:
                raise ValueError(f"RBM stack does not chain: {below.n_hidden} hidden -> {above.n_visible}")
        model = cls(sizes, scale_input_bias=first.scale_hidden_bias)
        with torch.no_grad():
            for layer, rbm in enumerate(rbms):
                model.encoder_weights[layer].copy_(rbm.W)
                model.encoder_biases[layer].copy_(rbm.hidden_bias)
                model.decoder_weights[layer].copy_(rbm.W.T)
                model.decoder_biases[layer].copy_(rbm.visible_bias)
        return model.to(first.W.device)

    def code_input(self, counts: Tensor) -> Tensor:
        """z, the total input of the code units, without noise.  (B, V) counts -> (B, bits)."""
        scale = counts.sum(dim=1, keepdim=True) if self.scale_input_bias else 1.0
        h: Tensor = counts @ self.encoder_weights[0] + scale * self.encoder_biases[0]
        for layer in range(
            1, len(self.encoder_weights)
        ):  # indexing (not slicing) keeps functional_call working
            h = torch.sigmoid(h) @ self.encoder_weights[layer] + self.encoder_biases[layer]
        return h

    def encode(self, counts: Tensor, noise: Tensor | None = None) -> Tensor:
        """Code activations y = sigmoid(z + noise) in (0, 1).  (B, V) -> (B, bits)."""
        z = self.code_input(counts)
        return torch.sigmoid(z if noise is None else z + noise)

    def codes(self, counts: Tensor) -> Tensor:
        """Binary codes, y > 0.5 without noise (i.e. z > 0).  (B, V) -> (B, bits) bool."""
        with torch.no_grad():
            return self.code_input(counts) > 0

    def decode_log_probs(self, code: Tensor) -> Tensor:
        """log p, the reconstructed word distribution.  (B, bits) activations -> (B, V) log-probabilities."""
        g = code
        for layer in range(len(self.decoder_weights) - 1, 0, -1):
            g = torch.sigmoid(g @ self.decoder_weights[layer] + self.decoder_biases[layer])
        return F.log_softmax(g @ self.decoder_weights[0] + self.decoder_biases[0], dim=1)

    def forward(self, counts: Tensor, noise: Tensor | None = None) -> Tensor:
        """log p of the reconstruction given noisy codes.  (B, V) counts, (B, bits) noise -> (B, V)."""
        return self.decode_log_probs(self.encode(counts, noise))

    def reconstruction_loss(
        self, counts: Tensor, noise: Tensor | None = None, target: Tensor | None = None
    ) -> Tensor:
        """Cross-entropy  -mean_b sum_i (t_bi / N_b) log p_bi  (nats per word, averaged over documents).

        t = `target` counts (default: the input `counts` themselves; a corrupted input can be asked to
        reconstruct the clean document).
        """
        target = counts if target is None else target
        lengths = target.sum(dim=1, keepdim=True).clamp_min(1.0)
        loss: Tensor = -((target / lengths) * self(counts, noise)).sum(dim=1).mean()
        return loss
