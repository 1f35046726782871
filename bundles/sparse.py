"""Serving-side sparse coder (PSD dictionary, LISTA and PSD encoders, FISTA): inference in numpy.

The math is models/sparse_coding.py's, without torch (the service must not need it):

    LISTA:  B = Y W_e,  Z_1 = h_1(B),  Z_{k+1} = h_{k+1}(B + Z_k S_k)    (K = `lista_steps` steps)
    PSD:    Z = h(Y W_e')                                               (the PSD encoder, one step)
    FISTA:  Z <- h_{lam/L}(P - (P G - Y D) / L) with momentum, G = D^T D, from Z = 0
    h:      max(x - theta, 0) for nonnegative codes, sign(x) max(|x| - theta, 0) otherwise

One image is the common request, and both its pixels (MNIST: ~20% ink) and its codes (a few dozen
to a few hundred active atoms of ~1000) are sparse: a product with a single row then reads only the
weight rows of its non-zeros, out = sum_{j: x_j != 0} x_j W[j, :], in place by a compiled kernel
(`_sparse_row_times`; numpy's W[active] would first copy those rows). For 1024 atoms, LISTA-3 reads
~2.5 MB instead of 11 MB. Batches use BLAS.

Search codes: the signature is one bit per atom (np.packbits order, like the text bundles' long
codes), set for the `signature_atoms` active atoms of largest magnitude (all active atoms when the
bundle does not say: formats 1 and 2). A fixed number of bits makes the Hamming distance of two
signatures 2 (k - shared atoms), a count of shared parts: with every active atom set, an image with
few active atoms was near every image, and atoms with tiny coefficients were noise. The address is
`address_bits` bits of the rotated code, bits = (Z - address_mean) @ address_rotation >
address_thresholds, bit 0 the most significant.

Weights (float32): dictionary (n, m); lista.W_e (n, m); lista.S (m, m) and lista.theta (m,) shared
by every step (format 1, and format 2 with `lista_untied` false), or lista.S (K-1, m, m) and
lista.theta (K, m), one per step (format 2, `lista_untied` true); psd.W_e (n, m), psd.theta (m,);
address_mean (m,), address_rotation (m, k), address_thresholds (k,). Format 3 adds
architecture.signature_atoms (a positive integer, or null: every active atom); its fingerprint covers
that choice along with the weights, since the stored signatures depend on both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np

from bundles.io import BundleError, check_shapes, id_from_fingerprint, read_bundle, weights_fingerprint

# 2: LISTA may have one S and theta per step (`lista_untied`); 3: `signature_atoms`
SPARSE_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
Encoder = Literal["lista", "psd", "fista"]
ENCODERS: tuple[Encoder, ...] = ("lista", "psd", "fista")
MAX_FISTA_ITERATIONS = 1000
# Weight names, spelled once for the writer (training/sparse_train.py) and this reader.
DICTIONARY = "dictionary"
LISTA_ENCODER, LISTA_INHIBITION, LISTA_THRESHOLD = "lista.W_e", "lista.S", "lista.theta"
PSD_ENCODER, PSD_THRESHOLD = "psd.W_e", "psd.theta"
ADDRESS_MEAN, ADDRESS_ROTATION, ADDRESS_THRESHOLDS = "address_mean", "address_rotation", "address_thresholds"


def sparse_weight_shapes(
    n_inputs: int, n_atoms: int, address_bits: int, lista_steps: int = 1, lista_untied: bool = False
) -> dict[str, tuple[int, ...]]:
    """The tensors a sparse bundle must hold."""
    n, m, k = n_inputs, n_atoms, lista_steps
    return {
        DICTIONARY: (n, m),
        LISTA_ENCODER: (n, m),
        LISTA_INHIBITION: (k - 1, m, m) if lista_untied else (m, m),
        LISTA_THRESHOLD: (k, m) if lista_untied else (m,),
        PSD_ENCODER: (n, m),
        PSD_THRESHOLD: (m,),
        ADDRESS_MEAN: (m,),
        ADDRESS_ROTATION: (m, address_bits),
        ADDRESS_THRESHOLDS: (address_bits,),
    }


def _positive_int(architecture: dict[str, Any], key: str, path: Path, upper: int | None = None) -> int:
    value = architecture.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (upper and value > upper):
        limit = f" and at most {upper}" if upper else ""
        raise BundleError(f"{path}: architecture.{key} must be a positive integer{limit}")
    return value


def _positive_float(architecture: dict[str, Any], key: str, path: Path) -> float:
    value = architecture.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise BundleError(f"{path}: architecture.{key} must be a positive number")
    return float(value)


@numba.njit(cache=True, nogil=True)
def _sparse_row_times(x: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out += x @ weights for one row x (a,), weights (a, b), out (b,): reads only the rows where x != 0."""
    for j in range(x.shape[0]):
        value = x[j]
        if value != 0.0:
            row = weights[j]
            for c in range(out.shape[0]):
                out[c] += value * row[c]


def _rows_times(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x @ weights for x (B, a) and float32 C-contiguous weights (a, b); for one row, only the rows of
    x's non-zeros are read (`_sparse_row_times`)."""
    if x.shape[0] == 1:
        out = np.zeros((1, weights.shape[1]), np.float32)
        _sparse_row_times(np.ascontiguousarray(x[0], dtype=np.float32), weights, out[0])
        return out
    product: np.ndarray = x @ weights
    return product


def compile_kernels() -> None:
    """Compile `_sparse_row_times` for float32 (or read it from numba's cache): before a first request."""
    _rows_times(np.ones((1, 2), np.float32), np.ones((2, 3), np.float32))


def signature_bits(codes: np.ndarray, atoms: int | None) -> np.ndarray:
    """The signature as booleans: (B, m) codes -> (B, m), True at the `atoms` active atoms of largest
    |z| (ties: the lower index), or at every active atom when `atoms` is None. A code with fewer
    active atoms sets fewer bits."""
    z = np.abs(np.asarray(codes))
    active: np.ndarray = z != 0
    if atoms is None or atoms >= z.shape[1]:
        return active
    # rank by |z| descending, ties by index: a stable argsort of -|z|
    top = np.argsort(-z, axis=1, kind="stable")[:, :atoms]
    bits = np.zeros_like(active)
    np.put_along_axis(bits, top, True, axis=1)
    out: np.ndarray = bits & active
    return out


class SparseBundle:
    """A trained sparse coder: codes by LISTA, the PSD encoder or FISTA; reconstructions; search codes."""

    kind = "sparse"

    def __init__(
        self, path: Path, config: dict[str, Any], weights: dict[str, np.ndarray], metrics: dict[str, Any]
    ):
        architecture = config.get("architecture")
        if not isinstance(architecture, dict):
            raise BundleError(f"{path}: config.json has no architecture object")
        shape = architecture.get("input_shape")
        if not (
            isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) and s > 0 for s in shape)
        ):
            raise BundleError(f"{path}: architecture.input_shape must be [height, width]")
        self.path, self.config, self.weights, self.metrics = path, config, weights, metrics
        self.input_shape: tuple[int, int] = (shape[0], shape[1])
        self.n_inputs = shape[0] * shape[1]
        self.n_atoms = _positive_int(architecture, "n_atoms", path)
        self.address_bits = _positive_int(architecture, "address_bits", path, upper=32)
        self.long_bits = self.n_atoms
        self.lista_steps = _positive_int(architecture, "lista_steps", path)
        self.fista_iterations = _positive_int(architecture, "fista_iterations", path, MAX_FISTA_ITERATIONS)
        self.lam = _positive_float(architecture, "lam", path)
        self.lipschitz = _positive_float(architecture, "lipschitz", path)
        self.nonnegative = bool(architecture.get("nonnegative", False))
        self.lista_untied = bool(architecture.get("lista_untied", False)) and self.lista_steps > 1
        self.signature_atoms: int | None = None  # formats 1 and 2: every active atom
        if architecture.get("signature_atoms") is not None:
            self.signature_atoms = _positive_int(architecture, "signature_atoms", path, self.n_atoms)
        check_shapes(
            path,
            weights,
            sparse_weight_shapes(
                self.n_inputs, self.n_atoms, self.address_bits, self.lista_steps, self.lista_untied
            ),
        )
        # float32 and C-contiguous, as the one-row kernel reads them
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        d = self.weights[DICTIONARY]
        self._dictionary_t = np.ascontiguousarray(d.T)  # (m, n): reconstructions read rows of active atoms
        self._gram = d.T @ d  # (m, m) for FISTA's gradient
        # What ties a collection's stored codes to this model: the weights that produce them and,
        # when the bundle chose one, how many atoms a signature keeps.
        fingerprint = weights_fingerprint(path)
        if self.signature_atoms is not None:
            rule = json.dumps({"weights": fingerprint, "signature_atoms": self.signature_atoms})
            fingerprint = hashlib.sha256(rule.encode()).hexdigest()
        self.bundle_id = id_from_fingerprint(self.kind, fingerprint)
        self.fingerprint = fingerprint[:16]
        compile_kernels()

    @classmethod
    def load(cls, path: Path | str) -> SparseBundle:
        path = Path(path)
        config, weights, metrics = read_bundle(path, kind=cls.kind, format_version=READABLE_FORMAT_VERSIONS)
        return cls(path, config, weights, metrics)

    # ----- codes ---------------------------------------------------------------------------------
    def _check(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"inputs must have shape (n, {self.n_inputs}), got {x.shape}")
        return x

    def _shrink(self, x: np.ndarray, theta: np.ndarray | float) -> np.ndarray:
        if self.nonnegative:
            return np.maximum(x - theta, 0.0)
        shrunk: np.ndarray = np.sign(x) * np.maximum(np.abs(x) - theta, 0.0)
        return shrunk

    def encode(
        self, inputs: np.ndarray, encoder: Encoder = "lista", iterations: int | None = None
    ) -> np.ndarray:
        """Sparse codes.  inputs: (B, n) -> (B, m) float32, mostly zeros.

        `iterations` applies to FISTA only (default: the bundle's `fista_iterations`).
        """
        y = self._check(inputs)
        w = self.weights
        if encoder == "lista":
            s, theta = w[LISTA_INHIBITION], w[LISTA_THRESHOLD]
            b = _rows_times(y, w[LISTA_ENCODER])
            z = self._shrink(b, theta[0] if self.lista_untied else theta)
            for k in range(1, self.lista_steps):
                if self.lista_untied:
                    z = self._shrink(b + _rows_times(z, s[k - 1]), theta[k])
                else:
                    z = self._shrink(b + _rows_times(z, s), theta)
            return z.astype(np.float32)
        if encoder == "psd":
            return self._shrink(_rows_times(y, w[PSD_ENCODER]), w[PSD_THRESHOLD]).astype(np.float32)
        if encoder == "fista":
            n_iter = self.fista_iterations if iterations is None else iterations
            if not 1 <= n_iter <= MAX_FISTA_ITERATIONS:
                raise ValueError(f"iterations must be in 1..{MAX_FISTA_ITERATIONS}, got {n_iter}")
            return self.fista(y, n_iter)
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")

    def fista(
        self, y: np.ndarray, n_iter: int, on_iterate: Callable[[np.ndarray], None] | None = None
    ) -> np.ndarray:
        """`n_iter` FISTA iterations from Z = 0 on E = 1/2 ||Y - Z D^T||^2 + lam ||Z||_1.  (B, m).

        `on_iterate` sees every iterate (for convergence curves).
        """
        step = 1.0 / self.lipschitz
        yd = _rows_times(y, self.weights[DICTIONARY])  # (B, m)
        z = np.zeros_like(yd)
        p, t = z, 1.0
        for _ in range(n_iter):
            z_next = self._shrink(p - step * (_rows_times(p, self._gram) - yd), self.lam * step)
            t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            p = z_next + ((t - 1.0) / t_next) * (z_next - z)
            z, t = z_next, t_next
            if on_iterate is not None:
                on_iterate(z)
        return z.astype(np.float32)

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Y_hat = Z D^T.  (B, m) -> (B, n); not clipped (the model is linear)."""
        z = np.asarray(codes, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.n_atoms:
            raise ValueError(f"codes must have shape (n, {self.n_atoms}), got {z.shape}")
        return _rows_times(z, self._dictionary_t)

    # ----- search codes --------------------------------------------------------------------------
    def signatures(self, codes: np.ndarray) -> np.ndarray:
        """The signature (`signature_bits`) packed: (B, m) -> (B, ceil(m / 8)) uint8 (np.packbits order)."""
        return np.packbits(signature_bits(codes, self.signature_atoms), axis=1)

    def addresses(self, codes: np.ndarray) -> np.ndarray:
        """`address_bits`-bit addresses of codes, bit 0 most significant.  (B, m) -> (B,) int64."""
        w = self.weights
        rotated = (np.asarray(codes, np.float32) - w[ADDRESS_MEAN]) @ w[ADDRESS_ROTATION]
        bits = rotated > w[ADDRESS_THRESHOLDS]
        powers = 1 << np.arange(self.address_bits - 1, -1, -1, dtype=np.int64)
        addresses: np.ndarray = bits.astype(np.int64) @ powers
        return addresses
