"""A shared-weight convolutional digit recogniser that scans an image of any size (seed 002).

A *scanning MLP* applies the same small net to every 28x28 window of a larger image. Its copies at
the different positions share their weights, so it is a convolutional net: a unit of layer l at
position p computes

    h_l[p] = relu( sum_{k in K} W_l[k] . h_{l-1}[s p + k] + b_l )      K: the kernel's offsets

with the same W_l, b_l at every p. Training the shared weights by gradient descent uses the sum over
the copies of each copy's gradient,

    dE/dW_l[k] = sum_p  dE/dz_l[p] (x) h_{l-1}[s p + k]                 z_l[p]: the pre-activation

which is what autograd computes for a convolution. Layers (sizes for a 28x28 input):

    x      (B, 1, 28, 28)  ink = 1, an MNIST-normalised digit (or any larger picture)
    conv1  5x5, 1 -> c1,  relu, 2x2 max-pool     (B, c1, 12, 12)
    conv2  5x5, c1 -> c2, relu, 2x2 max-pool     (B, c2, 4, 4)
    conv3  4x4, c2 -> hidden, relu, dropout      (B, hidden, 1, 1)   the "fully connected" layer
    conv4  1x1, hidden -> 11                     (B, 11, 1, 1)       10 digits + "no digit centred"

Given an (H, W) picture the same layers return an (11, (H - 28) / 4 + 1, (W - 28) / 4 + 1) map: the
output at (i, j) is exactly the net applied to the window rows 4i .. 4i + 27, columns 4j .. 4j + 27,
whose digit (if any) has its centre of mass at (4i + 14, 4j + 14) as MNIST's digits do. The 11th
class, `NONE`, is trained on windows not centred on a digit (between two digits, half a digit,
empty paper), so that scanning a strip finds the digits' positions as well as their classes.
No I/O here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.convnet_layout import (  # noqa: F401  (re-exported: the module's public names)
    CENTRE,
    N_DIGITS,
    N_OUTPUTS,
    NONE,
    SIDE,
    STRIDE,
    ConvNetArchitecture,
    weight_shapes,
)


class ScanningConvNet(nn.Module):
    """The net above. forward: (B, 1, H, W), H, W >= 28 -> logits (B, 11, (H-28)//4+1, (W-28)//4+1)."""

    def __init__(self, arch: ConvNetArchitecture | None = None):
        super().__init__()
        self.arch = arch = arch or ConvNetArchitecture()
        self.conv1 = nn.Conv2d(1, arch.conv1, 5)
        self.conv2 = nn.Conv2d(arch.conv1, arch.conv2, 5)
        self.conv3 = nn.Conv2d(arch.conv2, arch.hidden, 4)
        self.conv4 = nn.Conv2d(arch.hidden, N_OUTPUTS, 1)
        self.dropout = nn.Dropout(arch.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] < SIDE or x.shape[3] < SIDE:
            raise ValueError(f"expected (B, 1, H, W) with H, W >= {SIDE}, got {tuple(x.shape)}")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = self.dropout(F.relu(self.conv3(h)))
        return self.conv4(h)

    def window_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 784) or (B, 1, 28, 28) digits -> (B, 11) logits of the single window."""
        return self(images.reshape(-1, 1, SIDE, SIDE)).reshape(-1, N_OUTPUTS)


def digit_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """p(digit | a digit is there): softmax over the 10 digit logits only.  (..., 11) -> (..., 10)."""
    return torch.softmax(logits[..., :N_DIGITS], dim=-1)


def window_centres(n_outputs: int) -> torch.Tensor:
    """Input coordinate (row or column) of the digit centre each output position reads."""
    return torch.arange(n_outputs) * STRIDE + CENTRE
