"""The motor model's networks: one recognition net and one generative net per digit class (seed 000,
slides 4, 9, 19-22).

* **Recognition net** R_c (slide 9): image (784) -> code (70) of the program that drew it, as a
  two-hidden-layer ReLU net whose output is an offset from class c's prototype code:

      code = prototype_c + scale * (relu(relu(x W1 + b1) W2 + b2) W3 + b3)          x: (B, 784)

  so an untrained net answers the prototype (the seed's "biases = prototype").
* **Generative net** G_c (slides 20-22): a neural stand-in for the renderer, code -> image,

      image ~ sigmoid(relu(relu(z V1 + c1) V2 + c2) V3 + c3),     z = (code - prototype_c) / scale

  trained on the same (noisy code, rendered image) pairs. Its Jacobian turns pixel residuals into
  code gradients for local search:  code <- code + step * J_G(code)^T (x - render(code)).

The ten classes' nets have the same shapes and are stored stacked, weights (C, n_in, n_out), so one
batched matrix product runs all of them: inputs (C, B, n_in) -> (C, B, n_out), with
`models.motor_codes.stack_forward`, which serving runs in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.motor_codes import stack_forward
from models.motor_renderer import PROGRAM_SIZE

N_PIXELS = 784


class ClassNets(nn.Module):
    """C independent MLPs sizes[0] -> ... -> sizes[-1], one per class, evaluated together."""

    def __init__(self, n_classes: int, sizes: Sequence[int], *, last_init_std: float | None = None):
        super().__init__()
        self.sizes = tuple(sizes)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = layer == len(sizes) - 2
            std = last_init_std if last and last_init_std is not None else (2.0 / a) ** 0.5  # He init
            self.weights.append(nn.Parameter(torch.randn(n_classes, a, b) * std))
            self.biases.append(nn.Parameter(torch.zeros(n_classes, 1, b)))

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        return list(zip(self.weights, self.biases, strict=True))

    def forward(self, x: Tensor, *, sigmoid_output: bool = False) -> Tensor:
        """(C, B, sizes[0]) -> (C, B, sizes[-1])."""
        out: Tensor = stack_forward(x, self.layers(), sigmoid_output=sigmoid_output)
        return out


class MotorNets(nn.Module):
    """The recognition and generative nets of every class, with the class prototypes and code scale.

    prototypes: (C, 70) codes; scale: (70,) the code's unit per coordinate (nets work in
    z = (code - prototype) / scale).
    """

    def __init__(self, prototypes: Tensor, scale: Tensor, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        n_classes = prototypes.shape[0]
        self.prototypes: Tensor  # buffers, registered (so they move with the module and are saved)
        self.scale: Tensor
        self.register_buffer("prototypes", prototypes.clone())
        self.register_buffer("scale", scale.clone())
        self.recognition = ClassNets(n_classes, (N_PIXELS, *hidden, PROGRAM_SIZE), last_init_std=1e-3)
        self.generative = ClassNets(n_classes, (PROGRAM_SIZE, *hidden, N_PIXELS))

    @property
    def n_classes(self) -> int:
        return int(self.prototypes.shape[0])

    def recognize(self, images: Tensor) -> Tensor:
        """Each class's code for each image.  images: (C, B, 784) -> codes (C, B, 70)."""
        codes: Tensor = self.prototypes[:, None, :] + self.scale * self.recognition(images)
        return codes

    def generate(self, codes: Tensor) -> Tensor:
        """Each class's neural rendering of its codes.  codes: (C, B, 70) -> images (C, B, 784)."""
        z = (codes - self.prototypes[:, None, :]) / self.scale
        images: Tensor = self.generative(z, sigmoid_output=True)
        return images
