"""The predictive generative network (Lotter, Kreiman & Cox; seed 003): encoder, LSTM, decoder.

A video is frames x_1 .. x_T, each (1, H, W) with values in [0, 1]. The network reads one frame per
step and predicts the next one:

    e_t        = Enc(x_t)                                   (B, c2 * H/4 * W/4)
    h_t, c_t   = LSTM(e_t, (h_{t-1}, c_{t-1}))              (B, n_hidden) each, h_0 = c_0 = 0
    x^_{t+1}   = Dec(h_t)                                   (B, 1, H, W) in (0, 1)

    Enc: [conv k x k (same padding) -> ReLU -> 2x2 max-pool] twice         (1, H, W) -> (c2, H/4, W/4)
    Dec: fully connected n_hidden -> c2 * H/4 * W/4, ReLU, then twice
         [2x nearest-neighbour upsampling -> conv k x k], a ReLU between, a sigmoid at the end

The LSTM is torch's (gates i, f, g, o in that order; i, f, o sigmoid, g tanh):

    [i f g o] = e_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        W_ih (4n, d), W_hh (4n, n)
    c_t = f * c_{t-1} + i * g,    h_t = o * tanh(c_t)

Training minimises the mean squared error of the next-frame predictions (RMSProp, lr 0.001 in the
seed). `rollout` predicts k frames ahead by feeding each prediction back as the next input.
h_t is the representation the seed probes with a linear read-out ("LSTM activities -> L2 regression
-> value of a latent variable").

`FrameAutoencoder` is the seed's control "Encoder-FC-Decoder with #units as in LSTM": the same encoder
and decoder around a fully connected code of n_hidden units (ReLU), trained to reconstruct the frame
it sees (x^_t = Dec(FC(Enc(x_t)))); its code is compared with h_t by the same linear probes.

`Discriminator` is the optional adversarial critic (seed slides 33-36: "3 FC layers (relu, relu,
softmax)"): it sees the previous frame and a candidate next frame, flattened and concatenated, and
outputs the logit of "this next frame is real" (a 2-way softmax is a sigmoid of one logit). The
generator's adversarial loss is the discriminator's cross-entropy with the labels flipped.

No I/O here; training lives in training/predict.py, numpy inference in bundles/predict.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class PredictiveArchitecture:
    """Shapes of the network (saved in config.json; the numpy inference rebuilds it from this)."""

    size: int = 64  # frames are size x size, size divisible by 4
    channels: tuple[int, int] = (16, 16)  # c1, c2: encoder conv channels (decoder mirrors them)
    kernel: int = 5  # every convolution is kernel x kernel, same padding
    n_hidden: int = 1024  # LSTM units (the seed's 1024)

    @property
    def n_features(self) -> int:
        """d = c2 * (size / 4)^2: the encoder's output, the LSTM's input."""
        return self.channels[1] * (self.size // 4) ** 2


class Encoder(nn.Module):
    """(B, 1, H, W) -> (B, d): [conv -> ReLU -> max-pool 2x] twice, flattened."""

    def __init__(self, arch: PredictiveArchitecture):
        super().__init__()
        c1, c2 = arch.channels
        pad = arch.kernel // 2
        self.conv1 = nn.Conv2d(1, c1, arch.kernel, padding=pad)
        self.conv2 = nn.Conv2d(c1, c2, arch.kernel, padding=pad)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return x.flatten(1)


class Decoder(nn.Module):
    """(B, n_hidden) -> (B, 1, H, W): FC + ReLU to (c2, H/4, W/4), [2x NN upsample -> conv] twice."""

    def __init__(self, arch: PredictiveArchitecture):
        super().__init__()
        c1, c2 = arch.channels
        pad = arch.kernel // 2
        self.side = arch.size // 4
        self.c2 = c2
        self.fc = nn.Linear(arch.n_hidden, arch.n_features)
        self.conv1 = nn.Conv2d(c2, c1, arch.kernel, padding=pad)
        self.conv2 = nn.Conv2d(c1, 1, arch.kernel, padding=pad)

    def logits(self, h: Tensor) -> Tensor:
        x = torch.relu(self.fc(h)).view(-1, self.c2, self.side, self.side)
        x = torch.relu(self.conv1(nn.functional.interpolate(x, scale_factor=2, mode="nearest")))
        return self.conv2(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(h))


State = tuple[Tensor, Tensor]


class PredictiveNet(nn.Module):
    """Encoder -> LSTM -> decoder, trained to predict frame t+1 from frames 1..t."""

    def __init__(self, arch: PredictiveArchitecture):
        super().__init__()
        if arch.size % 4 or arch.kernel % 2 == 0:
            raise ValueError("size must be divisible by 4 and kernel odd")
        self.arch = arch
        self.encoder = Encoder(arch)
        self.lstm = nn.LSTM(arch.n_features, arch.n_hidden, batch_first=True)
        self.decoder = Decoder(arch)

    def states(self, frames: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """LSTM outputs after each frame.  frames (B, T, H, W) -> h (B, T, n_hidden), final (h, c)."""
        b, t, height, width = frames.shape
        features = self.encoder(frames.reshape(b * t, 1, height, width)).view(b, t, -1)
        h, (h_n, c_n) = self.lstm(features, state)
        return h, (h_n, c_n)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Next-frame predictions.  frames (B, T, H, W) -> (x^_2 .. x^_{T+1} (B, T, H, W), h (B, T, n))."""
        h, _ = self.states(frames)
        b, t, n = h.shape
        predictions = self.decoder(h.reshape(b * t, n)).view(b, t, *frames.shape[2:])
        return predictions, h

    @torch.no_grad()
    def rollout(self, frames: Tensor, k: int) -> Tensor:
        """The k frames after `frames` (B, T, H, W), each prediction fed back as input.  -> (B, k, H, W)."""
        h, state = self.states(frames)
        return self.continue_from(h[:, -1], state, k)

    @torch.no_grad()
    def continue_from(self, h: Tensor, state: State, k: int) -> Tensor:
        """k predictions from the LSTM's last output h (B, n) and state (h, c).  -> (B, k, H, W)."""
        out = [self.decoder(h).squeeze(1)]
        for _ in range(k - 1):
            h_seq, state = self.states(out[-1].unsqueeze(1), state)
            out.append(self.decoder(h_seq[:, -1]).squeeze(1))
        return torch.stack(out, dim=1)


class FrameAutoencoder(nn.Module):
    """Encoder -> FC (n_hidden units, ReLU) -> decoder: reconstructs the frame it sees (the control)."""

    def __init__(self, arch: PredictiveArchitecture):
        super().__init__()
        self.arch = arch
        self.encoder = Encoder(arch)
        self.code = nn.Linear(arch.n_features, arch.n_hidden)
        self.decoder = Decoder(arch)

    def encode(self, frames: Tensor) -> Tensor:
        """(N, H, W) -> codes (N, n_hidden)."""
        return torch.relu(self.code(self.encoder(frames.unsqueeze(1))))

    def forward(self, frames: Tensor) -> Tensor:
        """(N, H, W) -> reconstructions (N, H, W)."""
        return self.decoder(self.encode(frames)).squeeze(1)


class Discriminator(nn.Module):
    """(previous frame, candidate next frame) -> logit that the candidate is real: 3 FC layers."""

    def __init__(self, size: int, hidden: tuple[int, int] = (512, 256)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * size * size, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], 1),
        )

    def forward(self, previous: Tensor, candidate: Tensor) -> Tensor:
        """previous, candidate (N, H, W) -> logits (N,)."""
        return self.net(torch.cat([previous.flatten(1), candidate.flatten(1)], dim=1)).squeeze(1)


def discriminator_loss(critic: Discriminator, previous: Tensor, real: Tensor, fake: Tensor) -> Tensor:
    """Binary cross-entropy of the critic on real -> 1 and (detached) generated -> 0 next frames."""
    bce = nn.functional.binary_cross_entropy_with_logits
    real_logits = critic(previous, real)
    fake_logits = critic(previous, fake.detach())
    return bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))


def generator_loss(critic: Discriminator, previous: Tensor, fake: Tensor) -> Tensor:
    """The adversarial loss of the generator: the critic's cross-entropy with the labels flipped."""
    logits = critic(previous, fake)
    return nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
