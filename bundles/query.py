"""The query encoder of a text bundle, on disk and in numpy: short text -> code unit probabilities.

A text bundle (format_version 2) may hold a query encoder beside its document encoders, in two
files of its own, so adding one leaves the document weights, the bundle's fingerprint and every
index built with it untouched:

    query_encoder.safetensors  "query.layer.{l}.weight" (n_in, n_out), "query.layer.{l}.bias" (n_out,)
    query_vocabulary.json      {"words": [...Q words...], "idf": [...Q floats...]}

and config.json["query_encoder"] = {"vocab_size": Q, "layers": [Q, h_1, ..., a + l], "address_bits",
"long_bits", "short_query_max_tokens", "training": {...}} (null when the bundle has none).

The network (trained by `training.query_train`, distilled from the document encoders):

    x   = normalise_L2( ln(1 + c) * idf )        c: (Q,) counts of the query's words in its vocabulary
    h_1 = relu(x W_1 + b_1),  ...,  z = h_{L-1} W_L + b_L         (a + l,) logits
    P(address bit j) = sigmoid(z_j),  j < a;    P(long bit k) = sigmoid(z_{a+k})

Its vocabulary is larger than the document encoders' (the Q words of highest document frequency):
the rare words that carry a short query ("clipper") are inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import save_file

from bundles.io import BundleError, check_shapes, read_weights
from bundles.text_features import WordIndex, count_matrix

QUERY_WEIGHTS = "query_encoder.safetensors"
QUERY_VOCABULARY = "query_vocabulary.json"
QUERY_CONFIG_KEY = "query_encoder"


def query_features(counts: sp.spmatrix, idf: np.ndarray) -> sp.csr_matrix:
    """x = normalise_L2(ln(1 + c) * idf) row by row.  (n, Q) counts -> (n, Q) float32 CSR (0 rows stay 0)."""
    matrix = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    matrix.data = np.log1p(matrix.data) * idf.astype(np.float32)[matrix.indices]
    # Row norms and row scaling on the CSR arrays directly: a query is a handful of entries, and
    # scipy's generic products cost most of the encoding time of one query.
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    norms = np.sqrt(
        np.bincount(rows, weights=np.square(matrix.data, dtype=np.float64), minlength=matrix.shape[0])
    )
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    matrix.data = (matrix.data * scale[rows]).astype(np.float32)
    return matrix


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class QueryEncoder:
    """A loaded query encoder (see the module docstring); `QueryEncoder.load(bundle_dir, config)`."""

    def __init__(
        self, config: dict[str, Any], vocabulary: list[str], idf: np.ndarray, weights: dict[str, np.ndarray]
    ):
        self.config = config
        self.vocabulary = vocabulary
        self.idf = idf
        self.weights = weights
        self.layers = [int(n) for n in config["layers"]]
        self.address_bits = int(config["address_bits"])
        self.long_bits = int(config["long_bits"])
        self.short_query_max_tokens = int(config["short_query_max_tokens"])
        self._index = WordIndex(vocabulary)

    @classmethod
    def load(cls, path: Path, config: Mapping[str, Any], address_bits: int, long_bits: int) -> QueryEncoder:
        """Read and check the query encoder of the bundle at `path` whose config section is `config`."""
        if not isinstance(config, Mapping):
            raise BundleError(f"{path}/config.json: {QUERY_CONFIG_KEY!r} must be an object or null")
        for key in ("vocab_size", "address_bits", "long_bits", "short_query_max_tokens"):
            if not isinstance(config.get(key), int) or isinstance(config.get(key), bool) or config[key] < 0:
                raise BundleError(f"{path}/config.json: query_encoder.{key} missing or not a count")
        layers = config.get("layers")
        if not isinstance(layers, list) or len(layers) < 2 or not all(isinstance(n, int) for n in layers):
            raise BundleError(f"{path}/config.json: query_encoder.layers must be a list of layer sizes")
        if (config["address_bits"], config["long_bits"]) != (address_bits, long_bits):
            raise BundleError(
                f"{path}: the query encoder predicts {config['address_bits']}+{config['long_bits']} bits, "
                f"the document encoders have {address_bits}+{long_bits}"
            )
        if layers[0] != config["vocab_size"] or layers[-1] != address_bits + long_bits:
            raise BundleError(
                f"{path}/config.json: query encoder layers {layers} must run from vocab_size "
                f"{config['vocab_size']} to {address_bits + long_bits} code units"
            )
        from bundles.text import read_vocabulary  # the document vocabulary's reader and checks

        vocabulary, idf = read_vocabulary(path / QUERY_VOCABULARY, config["vocab_size"])
        weights = read_weights(path / QUERY_WEIGHTS)
        check_shapes(path, weights, layer_shapes(layers))
        return cls(dict(config), vocabulary, idf, weights)

    def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        """(n, Q) word counts over the query encoder's vocabulary."""
        return count_matrix(texts, self._index)

    def logits(self, counts: sp.spmatrix) -> np.ndarray:
        """z of every code unit (address units first).  (n, Q) counts -> (n, a + l) float32."""
        h: np.ndarray = query_features(counts, self.idf)
        last = len(self.layers) - 2
        for layer in range(last + 1):
            weight, bias = layer_names(layer)
            h = np.asarray(h @ self.weights[weight], dtype=np.float32)
            h += self.weights[bias]
            if layer < last:
                np.maximum(h, 0.0, out=h)
        return h

    def probabilities(self, counts: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
        """(address (n, a), long (n, l)) probabilities of the code units being on, float32."""
        p = _sigmoid(self.logits(counts))
        return p[:, : self.address_bits], p[:, self.address_bits :]


def layer_names(layer: int) -> tuple[str, str]:
    """The (weight, bias) tensor names of layer `layer` (from 0) in query_encoder.safetensors."""
    return f"query.layer.{layer}.weight", f"query.layer.{layer}.bias"


def layer_weights(layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """(weight, bias) of each layer, first to last, named as the bundle stores them."""
    named: dict[str, np.ndarray] = {}
    for layer, arrays in enumerate(layers):
        named.update(zip(layer_names(layer), arrays, strict=True))
    return named


def layer_shapes(layers: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The tensors of a query encoder with these layer sizes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
        weight, bias = layer_names(layer)
        shapes[weight] = (int(n_in), int(n_out))
        shapes[bias] = (int(n_out),)
    return shapes


def write_query_encoder(
    path: Path | str,
    config: Mapping[str, Any],
    vocabulary: Sequence[str],
    idf: np.ndarray,
    weights: Mapping[str, np.ndarray],
    metrics: Mapping[str, Any],
) -> None:
    """Add (or replace) the query encoder of the text bundle at `path`; its document side is untouched.

    config.json gets `query_encoder` = `config` and format_version 2; metrics.json gets
    `query_encoder` = `metrics`. The weights and vocabulary are written first, the config last, so an
    interrupted write leaves a bundle that still loads (without a query encoder, or with the old one).
    """
    from bundles.io import CONFIG, METRICS, write_metrics
    from bundles.text import FORMAT_VERSION

    path = Path(path)
    bundle_config = json.loads((path / CONFIG).read_text())
    check_shapes(path, weights, layer_shapes(config["layers"]))
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}, str(path / QUERY_WEIGHTS)
    )
    document = {"words": list(vocabulary), "idf": [float(x) for x in idf]}
    (path / QUERY_VOCABULARY).write_text(json.dumps(document) + "\n")
    existing = json.loads((path / METRICS).read_text()) if (path / METRICS).exists() else {}
    write_metrics(path, {**existing, QUERY_CONFIG_KEY: dict(metrics)})
    bundle_config |= {QUERY_CONFIG_KEY: dict(config), "format_version": FORMAT_VERSION}
    (path / CONFIG).write_text(json.dumps(bundle_config, indent=2, sort_keys=True) + "\n")
