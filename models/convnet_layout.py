"""The scanning convnet's layout without torch: window geometry, classes, architecture, weight shapes.

models/convnet.py (the torch module, for training) and the numpy reader that serves it
(bundles/convnet.py) share these, so the serving side never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

SIDE = 28  # the window the net reads
STRIDE = 4  # two 2x2 poolings: outputs are 4 input pixels apart
CENTRE = 14  # a window's digit has its centre of mass at (14, 14) of the window (MNIST's convention)
N_DIGITS = 10
NONE = 10  # index of the "no digit centred in this window" class
N_OUTPUTS = N_DIGITS + 1


@dataclass(frozen=True)
class ConvNetArchitecture:
    conv1: int = 32  # channels of the first convolution
    conv2: int = 64  # channels of the second
    hidden: int = 256  # units of the 4x4 "fully connected" convolution
    dropout: float = 0.3  # on the hidden units while training


def weight_shapes(arch: ConvNetArchitecture) -> dict[str, tuple[int, ...]]:
    """The tensors of a net (PyTorch layout: (out, in, kh, kw))."""
    return {
        "conv1.weight": (arch.conv1, 1, 5, 5),
        "conv1.bias": (arch.conv1,),
        "conv2.weight": (arch.conv2, arch.conv1, 5, 5),
        "conv2.bias": (arch.conv2,),
        "conv3.weight": (arch.hidden, arch.conv2, 4, 4),
        "conv3.bias": (arch.hidden,),
        "conv4.weight": (N_OUTPUTS, arch.hidden, 1, 1),
        "conv4.bias": (N_OUTPUTS,),
    }
