"""Serving-side MNIST bundles: the digit recogniser and the image autoencoder, inference in numpy.

Loading needs no torch: weights are read with safetensors.numpy and the forward passes are a few
matrix products. Both classes validate the bundle (kind, format version, every tensor's shape against
the architecture in config.json, finite values) and raise `BundleError` otherwise.

Weight layout (all float32, W as (n_in, n_out) so that h = sigmoid(x W + b)):

digits:  finetuned.W{l}, finetuned.b{l} for the sigmoid layers, finetuned.V (n_top, 10), finetuned.a (10,);
         generative.W{l}, generative.b{l} for the lower RBMs' recognition weights, and the labelled top RBM
         generative.top_W (n_pen + 10, n_top_hidden), generative.top_b (n_pen + 10,), generative.top_c.
images:  encoder.W{l}, encoder.b{l} (last layer linear), decoder.W{l}, decoder.b{l} (last layer
         logistic); code_mean (d,), code_rotation (d, d), code_thresholds (d,) for the binary codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, log_softmax, softmax

from bundles.io import BundleError, bundle_id, check_shapes, read_bundle

DIGITS_FORMAT_VERSION = 1
IMAGES_FORMAT_VERSION = 1
DIGIT_VARIANTS = ("finetuned", "generative")
N_PIXELS = 784
# Tensor names beside the layer stacks' (`stack_layer_names`), for the writers in training/ and the readers.
SOFTMAX_WEIGHT, SOFTMAX_BIAS = "finetuned.V", "finetuned.a"
TOP_RBM_WEIGHT, TOP_RBM_VISIBLE_BIAS, TOP_RBM_HIDDEN_BIAS = (
    "generative.top_W",
    "generative.top_b",
    "generative.top_c",
)
CODE_MEAN, CODE_ROTATION, CODE_THRESHOLDS = "code_mean", "code_rotation", "code_thresholds"


def stack_layer_names(stack: str, layer: int) -> tuple[str, str]:
    """The (weight, bias) tensor names of layer `layer` (from 0) of a layer stack: "finetuned" and
    "generative" in digits bundles, "encoder" and "decoder" in images bundles."""
    return f"{stack}.W{layer}", f"{stack}.b{layer}"


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 2 or images.shape[1] != N_PIXELS:
        raise ValueError(f"images must have shape (n, {N_PIXELS}), got {images.shape}")
    return images


def _sigmoid_stack(x: np.ndarray, weights: dict[str, np.ndarray], prefix: str, n_layers: int) -> np.ndarray:
    for layer in range(n_layers):
        weight, bias = stack_layer_names(prefix, layer)
        x = expit(x @ weights[weight] + weights[bias])
    return x


def _architecture(config: dict[str, Any], key: str, path: Path) -> Any:
    architecture = config.get("architecture")
    if not isinstance(architecture, dict):
        raise BundleError(f"{path}: config.json has no architecture object")
    return architecture.get(key)


def _int_list(config: dict[str, Any], key: str, path: Path) -> list[int]:
    value = _architecture(config, key, path)
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise BundleError(f"{path}: architecture.{key} must be a list of at least two positive integers")
    return value


def _int(config: dict[str, Any], key: str, path: Path) -> int:
    value = _architecture(config, key, path)
    if not isinstance(value, int) or value < 1:
        raise BundleError(f"{path}: architecture.{key} must be a positive integer")
    return value


def digit_weight_shapes(sizes: list[int], n_classes: int, top_hidden: int) -> dict[str, tuple[int, ...]]:
    """The tensors a digits bundle must hold for layer sizes [784, ..., n_top]."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        stacks = ("finetuned", "generative") if layer < len(sizes) - 2 else ("finetuned",)
        for stack in stacks:  # the generative net shares the shape of all but the top RBM
            weight, bias = stack_layer_names(stack, layer)
            shapes[weight], shapes[bias] = (a, b), (b,)
    shapes[SOFTMAX_WEIGHT] = (sizes[-1], n_classes)
    shapes[SOFTMAX_BIAS] = (n_classes,)
    shapes[TOP_RBM_WEIGHT] = (sizes[-2] + n_classes, top_hidden)
    shapes[TOP_RBM_VISIBLE_BIAS] = (sizes[-2] + n_classes,)
    shapes[TOP_RBM_HIDDEN_BIAS] = (top_hidden,)
    return shapes


def image_weight_shapes(sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """The tensors an images bundle must hold for encoder layer sizes [784, ..., code_size]."""
    d = sizes[-1]
    shapes: dict[str, tuple[int, ...]] = {CODE_MEAN: (d,), CODE_ROTATION: (d, d), CODE_THRESHOLDS: (d,)}
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    for layer, (a, b) in enumerate(pairs):
        weight, bias = stack_layer_names("encoder", layer)
        shapes[weight], shapes[bias] = (a, b), (b,)
    for layer, (a, b) in enumerate(reversed(pairs)):
        weight, bias = stack_layer_names("decoder", layer)
        shapes[weight], shapes[bias] = (b, a), (a,)
    return shapes


def _read_pixel_bundle(
    path: Path, kind: str, format_version: int
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any], list[int]]:
    """`read_bundle` of a net over 28x28 images: (config, weights, metrics, layer sizes from 784 on)."""
    config, weights, metrics = read_bundle(path, kind=kind, format_version=format_version)
    sizes = _int_list(config, "layer_sizes", path)
    if sizes[0] != N_PIXELS:
        raise BundleError(f"{path}: the input layer must have {N_PIXELS} units, not {sizes[0]}")
    return config, weights, metrics, sizes


class DigitBundle:
    """A trained digit recogniser: `predict_proba(images (n, 784) in [0, 1]) -> (n, 10)`."""

    kind = "digits"

    def __init__(
        self, path: Path, config: dict[str, Any], weights: dict[str, np.ndarray], metrics: dict[str, Any]
    ):
        self.path, self.config, self.weights, self.metrics = path, config, weights, metrics
        self.layer_sizes = _int_list(config, "layer_sizes", path)
        self.n_classes = _int(config, "n_classes", path)
        self.default_variant = config.get("default_variant", "finetuned")
        if self.default_variant not in DIGIT_VARIANTS:
            raise BundleError(f"{path}: default_variant must be one of {DIGIT_VARIANTS}")
        self.bundle_id = bundle_id(path, self.kind)

    @classmethod
    def load(cls, path: Path | str) -> DigitBundle:
        path = Path(path)
        config, weights, metrics, sizes = _read_pixel_bundle(path, cls.kind, DIGITS_FORMAT_VERSION)
        check_shapes(
            path,
            weights,
            digit_weight_shapes(sizes, _int(config, "n_classes", path), _int(config, "top_hidden", path)),
        )
        return cls(path, config, weights, metrics)

    def predict_proba(self, images: np.ndarray, variant: str | None = None) -> np.ndarray:
        """Class probabilities.  images: (n, 784) floats in [0, 1] -> (n, 10), rows summing to 1."""
        x = _check_images(images)
        variant = variant or self.default_variant
        w = self.weights
        n_hidden_layers = len(self.layer_sizes) - 1
        if variant == "finetuned":
            top = _sigmoid_stack(x, w, "finetuned", n_hidden_layers)
            probabilities: np.ndarray = softmax(top @ w[SOFTMAX_WEIGHT] + w[SOFTMAX_BIAS], axis=1)
            return probabilities
        if variant == "generative":
            f = _sigmoid_stack(x, w, "generative", n_hidden_layers - 1)
            n_f = f.shape[1]
            w_f, w_y = w[TOP_RBM_WEIGHT][:n_f], w[TOP_RBM_WEIGHT][n_f:]
            b_f, b_y = w[TOP_RBM_VISIBLE_BIAS][:n_f], w[TOP_RBM_VISIBLE_BIAS][n_f:]
            x_top = (f @ w_f + w[TOP_RBM_HIDDEN_BIAS])[:, None, :] + w_y[None]  # (n, 10, H)
            free_energy = -(f @ b_f)[:, None] - b_y[None] - np.logaddexp(0.0, x_top).sum(axis=2)
            probabilities = np.exp(log_softmax(-free_energy, axis=1))
            return probabilities
        raise ValueError(f"variant must be one of {DIGIT_VARIANTS}, got {variant!r}")

    def predict(self, images: np.ndarray, variant: str | None = None) -> np.ndarray:
        """Most probable digit per image.  (n, 784) -> (n,) int."""
        digits: np.ndarray = self.predict_proba(images, variant).argmax(axis=1)
        return digits


class ImageBundle:
    """A trained image autoencoder: 30-D codes, binary codes and reconstructions."""

    kind = "images"

    def __init__(
        self, path: Path, config: dict[str, Any], weights: dict[str, np.ndarray], metrics: dict[str, Any]
    ):
        self.path, self.config, self.weights, self.metrics = path, config, weights, metrics
        self.layer_sizes = _int_list(config, "layer_sizes", path)
        self.code_size = self.layer_sizes[-1]
        self.bundle_id = bundle_id(path, self.kind)

    @classmethod
    def load(cls, path: Path | str) -> ImageBundle:
        path = Path(path)
        config, weights, metrics, sizes = _read_pixel_bundle(path, cls.kind, IMAGES_FORMAT_VERSION)
        check_shapes(path, weights, image_weight_shapes(sizes))
        return cls(path, config, weights, metrics)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Real-valued codes.  (n, 784) in [0, 1] -> (n, code_size); the code layer is linear."""
        x = _check_images(images)
        n_layers = len(self.layer_sizes) - 1
        x = _sigmoid_stack(x, self.weights, "encoder", n_layers - 1)
        weight, bias = stack_layer_names("encoder", n_layers - 1)
        codes: np.ndarray = x @ self.weights[weight] + self.weights[bias]
        return codes

    def binary_codes(self, images: np.ndarray) -> np.ndarray:
        """Bits of the rotated codes, each on for half the training images.  (n, code_size) uint8."""
        w = self.weights
        return binarize((self.encode(images) - w[CODE_MEAN]) @ w[CODE_ROTATION], w[CODE_THRESHOLDS])

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Pixel probabilities from codes.  (n, code_size) -> (n, 784) in [0, 1]."""
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise ValueError(f"codes must have shape (n, {self.code_size}), got {codes.shape}")
        return _sigmoid_stack(codes, self.weights, "decoder", len(self.layer_sizes) - 1)


def binarize(codes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Threshold each code unit.  (n, d) -> (n, d) uint8 bits."""
    return (codes > thresholds).astype(np.uint8)
