"""The predictive bundle on disk and its numpy inference (the service needs no torch).

The math is models/predictive.py's, written with numpy:

    conv (same padding):  y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] x_pad[n, c, i + u, j + v]
                          (im2col, then one matrix product)
    max-pool 2x2: the maximum of four strided views (ReLU applied after pooling: they commute,
                          and it then touches 4x fewer values); nearest-neighbour 2x upsampling: repeats
    activations stay channel-major (C, N, H, W) between layers, the im2col product's own layout
    LSTM (torch's gate order i, f, g, o):  z = e W_ih^T + b_ih + h W_hh^T + b_hh,
                          c = sigmoid(f) c + sigmoid(i) tanh(g),  h = sigmoid(o) tanh(c)

The encoder's input projection e W_ih^T of all context frames is one matrix product; only the
recurrence runs frame by frame, and its first step skips h_0 W_hh^T (h_0 = c_0 = 0). Serving 10 frames
is memory-bound: W_ih is 4n x d floats (64 MB at n = 1024), W_hh 16 MB, read once per frame. So the
input projection reads only the rows of W_ih^T under nonzero encoder features (`project`), which
changes the rounding of the sum (outputs equal to ~1e-6); the other speed-ups (channel-major layout,
ReLU after pooling, the skipped zero step) leave every output bit as it was. tests/test_predictive.py
compares the inference with torch's on the served shapes.

Weights (float32, named as the torch state_dict): encoder.conv{1,2}.{weight,bias};
lstm.weight_ih_l0 (4n, d), lstm.weight_hh_l0 (4n, n), lstm.bias_ih_l0, lstm.bias_hh_l0 (4n,);
decoder.fc.weight (d, n), decoder.fc.bias (d,), decoder.conv{1,2}.{weight,bias}. A frame
autoencoder bundle (the benchmark's control) has code.{weight,bias} (n, d), (n,) instead of lstm.*.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bundles.io import CONFIG, BundleError, bundle_id, check_shapes, read_bundle

if TYPE_CHECKING:
    from torch import nn

PREDICTIVE_FORMAT_VERSION = 1
KINDS = ("predictive", "frame_autoencoder")
MAX_SIZE = 256
SPARSE_INPUT_SHARE = 0.5  # above this share of nonzero features the dense product is faster


def weight_shapes(
    kind: str, size: int, channels: list[int], kernel: int, n_hidden: int
) -> dict[str, tuple[int, ...]]:
    """The tensors a bundle of this architecture must hold."""
    c1, c2 = channels
    d = c2 * (size // 4) ** 2
    k = kernel
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.conv1.weight": (c1, 1, k, k),
        "encoder.conv1.bias": (c1,),
        "encoder.conv2.weight": (c2, c1, k, k),
        "encoder.conv2.bias": (c2,),
        "decoder.fc.weight": (d, n_hidden),
        "decoder.fc.bias": (d,),
        "decoder.conv1.weight": (c1, c2, k, k),
        "decoder.conv1.bias": (c1,),
        "decoder.conv2.weight": (1, c1, k, k),
        "decoder.conv2.bias": (1,),
    }
    if kind == "predictive":
        shapes |= {
            "lstm.weight_ih_l0": (4 * n_hidden, d),
            "lstm.weight_hh_l0": (4 * n_hidden, n_hidden),
            "lstm.bias_ih_l0": (4 * n_hidden,),
            "lstm.bias_hh_l0": (4 * n_hidden,),
        }
    else:
        shapes |= {"code.weight": (n_hidden, d), "code.bias": (n_hidden,)}
    return shapes


def torch_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """A torch module's parameters as float32 numpy arrays, by state_dict name."""
    return {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}


def _architecture(path: Path, config: dict[str, Any]) -> tuple[int, list[int], int, int]:
    arch = config.get("architecture")
    if not isinstance(arch, dict):
        raise BundleError(f"{path}: config.json has no architecture object")

    def positive(key: str, upper: int) -> int:
        value = arch.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= upper:
            raise BundleError(f"{path}: architecture.{key} must be an integer in 1..{upper}")
        return value

    size, kernel, n_hidden = positive("size", MAX_SIZE), positive("kernel", 15), positive("n_hidden", 8192)
    channels = arch.get("channels")
    if not (
        isinstance(channels, list)
        and len(channels) == 2
        and all(isinstance(c, int) and c > 0 for c in channels)
    ):
        raise BundleError(f"{path}: architecture.channels must be two positive integers")
    if size % 4 or kernel % 2 == 0:
        raise BundleError(f"{path}: architecture.size must be divisible by 4 and kernel odd")
    return size, channels, kernel, n_hidden


def load_torch_state(path: Path | str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, weights) of a predictive or frame autoencoder bundle, checked."""
    path = Path(path)
    config, weights, _ = read_bundle(path, kind=_kind_of(path), format_version=PREDICTIVE_FORMAT_VERSION)
    check_shapes(path, weights, weight_shapes(config["kind"], *_architecture(path, config)))
    return config, weights


def _kind_of(path: Path) -> str:
    try:
        import json

        kind = json.loads((path / CONFIG).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return "predictive"  # read_bundle then says what is wrong
    return kind if kind in KINDS else "predictive"


# ----- numpy layers ------------------------------------------------------------------------------
# Inside the network activations are kept channel-major, (C, N, H, W): the im2col product below
# yields that layout directly, so no layer pays for a transpose of a whole activation.
def _conv_cm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Same-padded convolution, channel-major.  (C, N, H, W), (O, C, k, k) -> (O, N, H, W).

    im2col: the k^2 shifted copies of the input, cols (C k k, N H W), filled by contiguous slab
    copies, then one (O, C k k) @ cols product.
    """
    c, n, h, w = x.shape
    k = weight.shape[-1]
    p = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))  # (C, N, H+2p, W+2p)
    cols = np.empty((c, k, k, n, h, w), dtype=np.float32)
    for u in range(k):
        for v in range(k):
            cols[:, u, v] = padded[:, :, u : u + h, v : v + w]
    out = weight.reshape(len(weight), -1) @ cols.reshape(c * k * k, -1)
    out += bias[:, None]
    return out.reshape(-1, n, h, w)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Same-padded convolution (cross-correlation, as torch).  (N, C, H, W), (O, C, k, k) -> (N, O, H, W)."""
    return _conv_cm(x.transpose(1, 0, 2, 3), weight, bias).transpose(1, 0, 2, 3)


def max_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 max-pooling, stride 2, over the last two axes.  (..., H, W) -> (..., H/2, W/2).

    The maximum of the four strided quarter views (exact, like any order of taking maxima).
    """
    top: np.ndarray = np.maximum(x[..., ::2, ::2], x[..., ::2, 1::2])
    np.maximum(top, np.maximum(x[..., 1::2, ::2], x[..., 1::2, 1::2]), out=top)
    return top


def relu_pool2(x: np.ndarray) -> np.ndarray:
    """ReLU then 2x2 max-pooling, computed as pooling then ReLU on 4x fewer values (the two commute)."""
    pooled = max_pool2(x)
    np.maximum(pooled, 0.0, out=pooled)
    return pooled


def upsample2(x: np.ndarray) -> np.ndarray:
    """Nearest-neighbour 2x upsampling over the last two axes.  (..., H, W) -> (..., 2H, 2W)."""
    return x.repeat(2, axis=-2).repeat(2, axis=-1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


class PredictiveBundle:
    """A trained predictive network: next frames of a Moving MNIST-like video, in numpy."""

    kind = "predictive"

    def __init__(
        self, path: Path, config: dict[str, Any], weights: dict[str, np.ndarray], metrics: dict[str, Any]
    ):
        self.size, self.channels, self.kernel, self.n_hidden = _architecture(path, config)
        check_shapes(
            path, weights, weight_shapes(self.kind, self.size, self.channels, self.kernel, self.n_hidden)
        )
        self.path, self.config, self.weights, self.metrics = path, config, weights, metrics
        w = weights
        self._w_ih_t = np.ascontiguousarray(w["lstm.weight_ih_l0"].T)  # (d, 4n)
        self._w_hh_t = np.ascontiguousarray(w["lstm.weight_hh_l0"].T)  # (n, 4n)
        self._b = w["lstm.bias_ih_l0"] + w["lstm.bias_hh_l0"]
        self._fc_t = np.ascontiguousarray(w["decoder.fc.weight"].T)  # (n, d)
        self.bundle_id = bundle_id(path, self.kind)

    @classmethod
    def load(cls, path: Path | str) -> PredictiveBundle:
        path = Path(path)
        config, weights, metrics = read_bundle(path, kind=cls.kind, format_version=PREDICTIVE_FORMAT_VERSION)
        return cls(path, config, weights, metrics)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """Enc: (N, H, W) -> (N, d), d in torch's (c2, H/4, W/4) order."""
        w = self.weights
        x = frames[None].astype(np.float32)  # (1, N, H, W), channel-major
        x = relu_pool2(_conv_cm(x, w["encoder.conv1.weight"], w["encoder.conv1.bias"]))
        x = relu_pool2(_conv_cm(x, w["encoder.conv2.weight"], w["encoder.conv2.bias"]))
        return x.transpose(1, 0, 2, 3).reshape(len(frames), -1)

    def decode(self, h: np.ndarray) -> np.ndarray:
        """Dec: (N, n_hidden) -> frames (N, H, W) in (0, 1)."""
        w = self.weights
        side = self.size // 4
        x = np.maximum(h @ self._fc_t + w["decoder.fc.bias"], 0.0).reshape(len(h), -1, side, side)
        x = upsample2(x.transpose(1, 0, 2, 3))  # channel-major (c2, N, H/2, W/2)
        x = np.maximum(_conv_cm(x, w["decoder.conv1.weight"], w["decoder.conv1.bias"]), 0.0)
        x = _conv_cm(upsample2(x), w["decoder.conv2.weight"], w["decoder.conv2.bias"])
        return sigmoid(x[0])

    def project(self, features: np.ndarray) -> np.ndarray:
        """The LSTM's input projection e W_ih^T + b_ih + b_hh.  (N, d) -> (N, 4n).

        Encoder features are ReLU-pooled: most are exactly 0 (70% of the d inputs are 0 in all ten
        frames of a Moving MNIST clip). Only the rows of W_ih^T under a nonzero feature are read, which
        is most of the work of serving (the product is memory-bound); the result is the dense
        product's up to float rounding (the sum runs in another order, ~1e-7 relative).
        """
        used = np.flatnonzero(features.any(axis=0))
        if len(used) > SPARSE_INPUT_SHARE * features.shape[1]:
            dense: np.ndarray = features @ self._w_ih_t + self._b
            return dense
        sparse: np.ndarray = features[:, used] @ self._w_ih_t[used] + self._b
        return sparse

    def _lstm(
        self, inputs: np.ndarray, h: np.ndarray | None, c: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the LSTM over precomputed input projections (T, B, 4n) -> (h_1..h_T (T, B, n), h_T, c_T).

        h = c = None is the zero initial state: the first step then skips h W_hh^T (zero) and c f.
        """
        n = self.n_hidden
        out = []
        for z_in in inputs:
            z = z_in if h is None else z_in + h @ self._w_hh_t
            i, f, g, o = (
                sigmoid(z[:, :n]),
                sigmoid(z[:, n : 2 * n]),
                np.tanh(z[:, 2 * n : 3 * n]),
                sigmoid(z[:, 3 * n :]),
            )
            c = i * g if c is None else f * c + i * g
            h = o * np.tanh(c)
            out.append(h)
        assert h is not None and c is not None, "no input steps"
        return np.stack(out), h, c

    def states(self, frames: np.ndarray) -> np.ndarray:
        """LSTM outputs h_t after each frame.  (B, T, H, W) -> (B, T, n_hidden)."""
        b, t = frames.shape[:2]
        projected = self.project(self.encode(frames.reshape(b * t, self.size, self.size)))
        h, _, _ = self._lstm(projected.reshape(b, t, -1).transpose(1, 0, 2), None, None)
        return h.transpose(1, 0, 2)

    def rollout(self, frames: np.ndarray, k: int) -> np.ndarray:
        """The k frames after `frames` (B, T, H, W), each prediction fed back.  -> (B, k, H, W) in (0, 1)."""
        if frames.ndim != 4 or frames.shape[2:] != (self.size, self.size):
            raise ValueError(f"frames must have shape (B, T, {self.size}, {self.size}), got {frames.shape}")
        b, t = frames.shape[:2]
        projected = self.project(self.encode(frames.reshape(b * t, self.size, self.size)))
        _, h, c = self._lstm(projected.reshape(b, t, -1).transpose(1, 0, 2), None, None)
        out = []
        for step in range(k):
            out.append(self.decode(h))
            if step < k - 1:
                _, h, c = self._lstm(self.project(self.encode(out[-1]))[None], h, c)
        return np.stack(out, axis=1).astype(np.float32)
