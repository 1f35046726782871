"""Training windows for the scanning convnet: pieces of digit strips with a soft presence target.

The reader (bundles/convnet.py) scans a strip with one window every 4 px and looks for the columns
where the presence 1 - p(NONE) peaks, so the net is trained on what those windows hold. Each window
(28x28) is a piece of a strip, generated on the fly from a minibatch of B training digits:

* a digit k at offset (dx_k, dy_k) px from the window's centre, distorted by a random affine map
  (rotation, scale, shear: MNIST's own spread of slants and sizes, and the strips' digit sizes);
  a `centred` fraction of windows have it within `jitter` px of the centre, the others anywhere
  within `reach` px sideways (half a digit, the gap between two digits); up to `rise` px up or down,
  or for a `vertical` fraction of the off-centre ones far up or down; an `empty` fraction has no digit;
* each neighbour (left, right, each with probability `context`) is another digit placed as in a
  strip (bundles/digit_strips.py): the ink gap between neighbours drawn from `gap` (negative:
  touching or overlapping ink), the vertical offset within +-`neighbour_dy` px of the first;
* a `cut` fraction is cut as the segmenting reader cuts a strip (bundles/convnet_pieces.py): the
  columns beyond a vertical line halfway across the ink gap to each neighbour (+-`cut_jitter` px) are
  erased, so where the digits overlap part of the digit goes and part of the neighbour stays; a
  `halved` fraction of the centred windows (digits at least `halved_width` px wide) is cut through
  the digit itself (at 35-65% of its ink width, one side erased) and has no digit: target NONE (a
  half digit is not a digit);
* a `resampled` fraction is shrunk and grown back (the blur of a small picture grown to MNIST's size),
  and a `noisy` fraction gets Gaussian pixel noise.

The target is soft. With (dx, dy) the offset of the digit nearest the window's centre and y its label,

    g = exp(-dx^2 / (2 sigma^2)) * exp(-max(|dy| - band, 0)^2 / (2 sigma^2))
    target = g * onehot(y) + (1 - g) * onehot(NONE)

so the presence map is a bump of width `sigma` at each digit's centre (sideways) and flat over
`band` px up and down (the reader takes the best row), and it is near zero between two digits. The
nearest digit is the one with the largest g. Cross-entropy against this target trains the 10 digit
logits on every window with a digit near its centre, each in proportion to g.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from models.convnet_layout import N_OUTPUTS, NONE, SIDE


@dataclass(frozen=True)
class WindowConfig:
    rotation_deg: float = 12.0
    scale: float = 0.12  # each digit's scale factor in 1 +- scale
    shear: float = 0.15
    centred: float = 0.5  # fraction of windows whose digit is within `jitter` px of the centre
    jitter: float = 2.0  # px (the reader's windows are 4 px apart: a digit is <= 2 px from one)
    rise: float = 2.0  # px: vertical offsets within +-rise (4, with resampled 0.3: a worse validation error)
    reach: float = 14.0  # px: the other windows' digit anywhere within +-reach sideways
    vertical: float = 0.1  # fraction of those also moved 6-16 px up or down
    empty: float = 0.03  # fraction of windows with no digit (noise only)
    context: float = 0.6  # probability of a neighbour on each side
    gap: tuple[float, float] = (-3.0, 8.0)  # px between neighbours' ink (the strips' range)
    neighbour_dy: float = 3.0  # px: a neighbour's vertical offset from the digit's
    sigma: float = 2.0  # px: width of the presence bump
    band: float = 2.0  # px up and down over which presence stays full
    resampled: float = 0.0  # fraction shrunk by a factor in [0.5, 0.8] and grown back (small strips)
    noisy: float = 0.15
    cut: float = 0.0  # fraction of windows cut halfway across the gaps to the neighbours
    cut_jitter: float = 1.5  # px
    halved: float = 0.0  # fraction of the centred windows cut through their digit (target NONE)
    halved_width: float = 12.0  # px: only digits at least this wide (half a "1" is still a "1")
    noise_std: float = 0.12  # noise std drawn uniformly in [0, noise_std]


def _affine(x: torch.Tensor, cfg: WindowConfig, g: torch.Generator, shift: torch.Tensor) -> torch.Tensor:
    """Random affine distortion of (B, 1, 28, 28) digits, then a shift of (B, 2) px (dx, dy)."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g, device=x.device)

    angle = u(-1, 1) * math.radians(cfg.rotation_deg)
    scale = 1.0 + u(-1, 1) * cfg.scale
    shear = u(-1, 1) * cfg.shear
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3, device=x.device)
    # output -> input coordinates (normalised to [-1, 1]); shear along x, then rotate and scale
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos + shear * sin
    # the shift is applied to the output, so in input coordinates it is A (dx, dy)
    theta[:, :, 2] = -torch.einsum("bij,bj->bi", theta[:, :, :2], shift * (2.0 / SIDE))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _ink_width(x: torch.Tensor) -> torch.Tensor:
    """Width (px) of each digit's ink columns.  (B, 1, 28, 28) -> (B,)."""
    cols = (x[:, 0] > 0.2).any(dim=1).float()  # (B, 28)
    idx = torch.arange(SIDE, device=x.device, dtype=torch.float32)
    left = torch.where(cols > 0, idx, torch.full_like(idx, SIDE)).min(dim=1).values
    right = torch.where(cols > 0, idx, torch.full_like(idx, -1)).max(dim=1).values
    return (right - left + 1).clamp(min=1.0)


def presence_target(dx: torch.Tensor, dy: torch.Tensor, cfg: WindowConfig) -> torch.Tensor:
    """g of the module doc for offsets (B,) px -> (B,) in [0, 1]."""
    beyond = (dy.abs() - cfg.band).clamp(min=0.0)
    return torch.exp(-(dx**2 + beyond**2) / (2 * cfg.sigma**2))


def make_windows(
    x: torch.Tensor, y: torch.Tensor, cfg: WindowConfig, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows (B, 1, 28, 28) and soft targets (B, 11) from (B, 784) digits and (B,) labels."""
    b, dev = x.shape[0], x.device
    digits = x.reshape(b, 1, SIDE, SIDE)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g, device=dev)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(b, generator=g, device=dev) < p

    def sign() -> torch.Tensor:
        return torch.where(coin(0.5), 1.0, -1.0)

    centred = coin(cfg.centred)
    dx = torch.where(centred, u(-cfg.jitter, cfg.jitter), u(-cfg.reach, cfg.reach))
    far_up = ~centred & coin(cfg.vertical)
    dy = torch.where(far_up, sign() * u(6.0, 16.0), u(-cfg.rise, cfg.rise))
    main = _affine(digits, cfg, g, torch.stack([dx, dy], dim=1))
    width = _ink_width(digits)  # before the affine map (+-scale): close enough for spacing
    offsets, labels, layers = [(dx, dy)], [y], [main]
    columns = torch.arange(SIDE, device=dev, dtype=torch.float32)[None] + 0.5  # (1, 28) pixel centres
    keep = torch.ones(b, SIDE, device=dev)  # columns left after the cuts
    cut = coin(cfg.cut)
    for side in (-1.0, 1.0):
        perm = torch.randperm(b, generator=g, device=dev)
        # a neighbour's centre: half of each ink width plus the gap
        gap = u(*cfg.gap)
        ox = dx + side * (width / 2 + width[perm] / 2 + gap)
        oy = dy + u(-cfg.neighbour_dy, cfg.neighbour_dy)
        present = coin(cfg.context)
        layers.append(
            _affine(digits[perm], cfg, g, torch.stack([ox, oy], dim=1)) * present.float()[:, None, None, None]
        )
        offsets.append((torch.where(present, ox, torch.full_like(ox, 1e3)), oy))
        labels.append(y[perm])
        line = SIDE / 2 + dx + side * (width / 2 + gap / 2) + u(-cfg.cut_jitter, cfg.cut_jitter)
        beyond = (columns - line[:, None]) * side > 0
        keep = keep * ~(beyond & (cut & present)[:, None])
    halved = centred & coin(cfg.halved) & (width >= cfg.halved_width)
    line = SIDE / 2 + dx + width * (u(0.35, 0.65) - 0.5)
    beyond = (columns - line[:, None]) * sign()[:, None] > 0
    keep = keep * ~(beyond & halved[:, None])
    windows = torch.stack(layers).amax(dim=0) * keep[:, None, None, :]
    empty = coin(cfg.empty)
    windows = torch.where(empty[:, None, None, None], torch.zeros_like(windows), windows)
    # the nearest digit: the one with the largest presence target
    gs = torch.stack([presence_target(ox, oy, cfg) for ox, oy in offsets])  # (3, B)
    gs = torch.where(empty[None], torch.zeros_like(gs), gs)
    gs[0] = torch.where(halved, torch.zeros_like(gs[0]), gs[0])
    best = gs.argmax(dim=0)
    presence = gs.gather(0, best[None])[0]
    label = torch.stack(labels).gather(0, best[None])[0]
    targets = torch.zeros(b, N_OUTPUTS, device=dev)
    targets[torch.arange(b, device=dev), label] = presence
    targets[:, NONE] += 1.0 - presence
    if cfg.resampled > 0:
        windows = torch.where(coin(cfg.resampled)[:, None, None, None], _resampled(windows, g), windows)
    noisy = coin(cfg.noisy).float()[:, None, None, None]
    noise = torch.randn(windows.shape, generator=g, device=dev) * u(0.0, cfg.noise_std)[:, None, None, None]
    return (windows + noisy * noise).clamp(0.0, 1.0), targets


def _resampled(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(B, 1, 28, 28) shrunk by one factor in [0.5, 0.8] (area-weighted) and grown back (bicubic), as
    the reader's preparation grows the digits of a small picture to 20 px."""
    side = int(SIDE * (0.5 + 0.3 * float(torch.rand(1, generator=g, device=x.device))))
    small = F.interpolate(x, size=(side, side), mode="area")
    return F.interpolate(small, size=(SIDE, SIDE), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
