"""Evaluation of a sparse bundle on MNIST, through its numpy inference (as the service runs it).

* Iterations: reconstruction error (squared, summed over pixels), active atoms, energy and distance
  to the optimal code, after each FISTA iteration from zero, against LISTA's K steps and the PSD
  encoder's one step; and how many FISTA iterations reach what LISTA-K reaches.
* Linear classifier: multinomial logistic regression on the codes, on the raw pixels and, when an
  autoencoder bundle is given, on its 30-D codes; the L2 weight C is chosen on the validation split,
  then the classifier is refitted on all 60,000 training images and tested once.
* Retrieval: precision@100 of test images against the 60,000 training images by signature Hamming
  distance (the bundle's signature, and for reference the one of every active atom), and the
  autoencoder's binary codes by theirs, the same way.
* Plots: the dictionary's most used atoms, reconstruction error against iterations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from bundles.sparse import DICTIONARY, SparseBundle, signature_bits  # noqa: E402
from bundles.vision import ImageBundle  # noqa: E402
from training.mnist import MnistSplits  # noqa: E402
from training.vision_eval import hamming_hits_at_k  # noqa: E402

log = logging.getLogger(__name__)

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


# ----- iterations --------------------------------------------------------------------------------
def _stats(bundle: SparseBundle, y: np.ndarray, z: np.ndarray, optimal: np.ndarray) -> dict[str, float]:
    recon = ((y - bundle.reconstruct(z)) ** 2).sum(1)
    return {
        "reconstruction_error": float(recon.mean()),
        "active": float((z != 0).sum(1).mean()),
        "energy": float((0.5 * recon + bundle.lam * np.abs(z).sum(1)).mean()),
        "code_error": float(((z - optimal) ** 2).sum(1).mean()),
    }


def _iterates(bundle: SparseBundle, y: np.ndarray, n_iter: int) -> list[np.ndarray]:
    """The FISTA iterates 1..n_iter of (B, n) inputs, each (B, m), from one run of the bundle's FISTA."""
    out: list[np.ndarray] = []
    bundle.fista(y, n_iter, on_iterate=lambda z: out.append(z.astype(np.float32)))
    return out


def first_reaching(curve: list[float], level: float) -> int | None:
    """The first iteration (1-based) whose value is at most `level`, or None if none is."""
    hits = [i + 1 for i, value in enumerate(curve) if value <= level]
    return hits[0] if hits else None


def iteration_curves(bundle: SparseBundle, y: np.ndarray, n_iter: int, optimal_iter: int) -> dict[str, Any]:
    """FISTA 1..n_iter against LISTA-K (and its intermediate steps) and the PSD encoder, on inputs y."""
    optimal = bundle.fista(y, optimal_iter)
    fista = [_stats(bundle, y, z, optimal) for z in _iterates(bundle, y, n_iter)]
    lista = bundle.encode(y, "lista")
    lista_stats = _stats(bundle, y, lista, optimal)
    psd_stats = _stats(bundle, y, bundle.encode(y, "psd"), optimal)
    keys = ("reconstruction_error", "code_error", "energy")
    return {
        "n_images": len(y),
        "optimal": {**_stats(bundle, y, optimal, optimal), "fista_iterations": optimal_iter},
        "fista": {
            key: [s[key] for s in fista] for key in ("reconstruction_error", "active", "energy", "code_error")
        },
        "lista": {**lista_stats, "steps": bundle.lista_steps},
        "psd_encoder": {**psd_stats, "steps": 1},
        "fista_iterations_to_match": {
            "lista": {key: first_reaching([s[key] for s in fista], lista_stats[key]) for key in keys},
            "psd_encoder": {key: first_reaching([s[key] for s in fista], psd_stats[key]) for key in keys},
        },
    }


# ----- linear classifier -------------------------------------------------------------------------
def _rms_scaled(train: np.ndarray, *others: np.ndarray) -> list[sp.csr_matrix]:
    """Divide every feature by its training RMS (no centring, so sparse codes stay sparse).

    The RMS is floored at a tenth of the median feature's: a feature that is almost never on (a
    border pixel, a rarely used atom) is not blown up into a huge value the solver must tame.
    """
    rms = np.sqrt((train.astype(np.float64) ** 2).mean(0))
    scale = np.maximum(rms, 0.1 * np.median(rms[rms > 0]) if (rms > 0).any() else 1.0)
    return [sp.csr_matrix(x / scale) for x in (train, *others)]


def linear_test_error(
    features: Callable[[np.ndarray], np.ndarray] | dict[str, Callable[[np.ndarray], np.ndarray]],
    data: MnistSplits,
    c_grid: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Logistic regression on features(images): C picked on validation, refit on 60k, test error.

    `features` may name several candidate feature maps (e.g. the codes of each encoder): the pair
    (features, C) with the lowest validation error is refitted and tested, once.
    """
    started = time.perf_counter()
    c_grid = c_grid or C_GRID
    candidates = features if isinstance(features, dict) else {"features": features}
    validation: dict[str, dict[str, float]] = {}
    best: tuple[float, str, float] | None = None
    for name, feature_map in candidates.items():
        train, valid = feature_map(data.train_x), feature_map(data.valid_x)
        train_s, valid_s = _rms_scaled(train, valid)
        validation[name] = {}
        for c in c_grid:
            model = LogisticRegression(C=c, max_iter=1000, tol=1e-4).fit(train_s, data.train_y)
            error = float((model.predict(valid_s) != data.valid_y).mean())
            validation[name][str(c)] = error
            log.info("%s C=%g validation error %.4f", name, c, error)
            if best is None or error < best[0]:
                best = (error, name, c)
    assert best is not None
    _, chosen, c_best = best
    feature_map = candidates[chosen]
    train, test = feature_map(data.full_train_x), feature_map(data.test_x)
    full_s, test_s = _rms_scaled(train, test)
    model = LogisticRegression(C=c_best, max_iter=1000, tol=1e-4).fit(full_s, data.full_train_y)
    result: dict[str, Any] = {
        "test_error": float((model.predict(test_s) != data.test_y).mean()),
        "validation_error_by_C": validation[chosen],
        "C": c_best,
        "features": int(train.shape[1]),
        "seconds": time.perf_counter() - started,
    }
    if isinstance(features, dict):
        result.update({"feature_choice": chosen, "validation_error_by_features_and_C": validation})
    return result


# ----- retrieval ---------------------------------------------------------------------------------
def signature_precision_at_100(bits: Callable[[np.ndarray], np.ndarray], data: MnistSplits) -> dict[str, Any]:
    """Test images as queries against the 60,000 training images, ranked by Hamming distance of bits."""
    hits = hamming_hits_at_k(
        bits(data.test_x), data.test_y, bits(data.full_train_x), data.full_train_y, k=100
    )
    return {
        "precision_at_100": float(hits.mean()),
        "by_class": {str(c): float(hits[data.test_y == c].mean()) for c in range(10)},
    }


def sparse_bits(bundle: SparseBundle, every_active: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Unpacked signatures (n, m) of LISTA codes, encoded in chunks: the bundle's (its
    `signature_atoms` largest atoms) or, with `every_active`, every active atom (formats 1-2)."""
    atoms = None if every_active else bundle.signature_atoms

    def bits(x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [signature_bits(bundle.encode(x[s : s + 5000]), atoms) for s in range(0, len(x), 5000)]
        )

    return bits


def autoencoder_bits(bundle: ImageBundle) -> Callable[[np.ndarray], np.ndarray]:
    return bundle.binary_codes


# ----- latency -----------------------------------------------------------------------------------
def encode_latency(bundle: SparseBundle, images: np.ndarray, n: int = 200) -> dict[str, float]:
    """p50 milliseconds to encode one image (in-process `SparseBundle.encode`), per encoder."""
    out = {}
    for encoder in ("lista", "psd", "fista"):
        times = []
        for i in range(n):
            started = time.perf_counter()
            bundle.encode(images[i : i + 1], encoder)
            times.append(1000 * (time.perf_counter() - started))
        out[encoder] = float(np.percentile(times, 50))
    return out


# ----- plots -------------------------------------------------------------------------------------
def plot_dictionary(
    bundle: SparseBundle, usage: np.ndarray, path: Path, title: str, count: int = 100
) -> None:
    """The `count` most used atoms, each scaled to its own range (the seed's "digit parts")."""
    order = np.argsort(-usage)[:count]
    h, w = bundle.input_shape
    cols = 10
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, atom in zip(axes.ravel(), order, strict=False):
        image = bundle.weights[DICTIONARY][:, atom].reshape(h, w)
        ax.imshow(image, cmap="gray_r", vmin=min(0.0, image.min()), vmax=image.max())
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_iterations(curves: dict[str, Any], path: Path) -> None:
    """Reconstruction error against iterations: FISTA's curve, LISTA-K and the PSD encoder as points."""
    fista = curves["fista"]["reconstruction_error"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(range(1, len(fista) + 1), fista, label="FISTA", color="tab:blue")
    lista, psd = curves["lista"], curves["psd_encoder"]
    ax.scatter(
        [lista["steps"]],
        [lista["reconstruction_error"]],
        color="tab:red",
        zorder=3,
        label=f"LISTA, K = {lista['steps']}",
    )
    ax.scatter(
        [1], [psd["reconstruction_error"]], color="tab:green", marker="s", zorder=3, label="PSD encoder"
    )
    ax.axhline(
        curves["optimal"]["reconstruction_error"],
        color="gray",
        ls=":",
        label=f"optimal code ({curves['optimal']['fista_iterations']} FISTA iterations)",
    )
    match = curves["fista_iterations_to_match"]["lista"]["reconstruction_error"]
    if match is not None:
        ax.axvline(
            match, color="tab:red", ls="--", lw=0.8, label=f"FISTA reaches LISTA-{lista['steps']} at {match}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("iterations (shrinkage steps)")
    ax.set_ylabel("reconstruction error (squared, summed over pixels)")
    ax.set_title(f"MNIST test images ({curves['n_images']}): FISTA vs LISTA")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_sparse(
    bundle_path: Path,
    data: MnistSplits,
    plots: Path | None = None,
    *,
    autoencoder: Path | None = None,
    curve_images: int = 2000,
    curve_iterations: int = 300,
    optimal_iterations: int = 1000,
    pixels: bool = True,
) -> dict[str, Any]:
    """Every test-set number of a whole-image sparse bundle (and of the autoencoder, if given).

    The linear classifier on sparse codes chooses, on validation, between the codes of the served
    LISTA and of the PSD encoder (C as well). `pixels=False` skips the raw-pixel baseline, which
    does not depend on the bundle and is the slowest fit (~15 minutes on one thread).
    """
    bundle = SparseBundle.load(bundle_path)
    if bundle.input_shape != (28, 28):
        raise ValueError(f"{bundle_path} codes patches; the MNIST evaluation needs a whole-image bundle")
    curves = iteration_curves(bundle, data.test_x[:curve_images], curve_iterations, optimal_iterations)
    codes = {
        "lista": lambda x: bundle.encode(x, "lista"),
        "psd_encoder": lambda x: bundle.encode(x, "psd"),
    }
    linear = {"psd": linear_test_error(codes, data)}
    if pixels:
        linear["pixels"] = linear_test_error(lambda x: x, data)
    retrieval = {"sparse_signature": signature_precision_at_100(sparse_bits(bundle), data)}
    if bundle.signature_atoms is not None:  # what the signature of every active atom gives, for reference
        retrieval["sparse_signature_every_active_atom"] = signature_precision_at_100(
            sparse_bits(bundle, every_active=True), data
        )
    if autoencoder is not None:
        images = ImageBundle.load(autoencoder)
        linear["autoencoder"] = linear_test_error(images.encode, data)
        retrieval["autoencoder_binary_code"] = signature_precision_at_100(autoencoder_bits(images), data)
    results: dict[str, Any] = {
        "bundle_id": bundle.bundle_id,
        "autoencoder_bundle_id": ImageBundle.load(autoencoder).bundle_id if autoencoder is not None else None,
        "iterations": curves,
        "fista_iterations_to_match_lista_k3": curves["fista_iterations_to_match"]["lista"][
            "reconstruction_error"
        ]
        if bundle.lista_steps == 3
        else None,
        "linear_test_error": {name: r["test_error"] for name, r in linear.items()},
        "linear_classifier": linear,
        "retrieval_precision_at_100": {name: r["precision_at_100"] for name, r in retrieval.items()},
        "retrieval": retrieval,
        "signature_atoms": bundle.signature_atoms,
        "signature_choice": bundle.metrics.get("signature"),
        "encode_ms_p50": encode_latency(bundle, data.test_x),
        "encode_timing": "in-process SparseBundle.encode of one test image, p50 of 200; fista with the "
        f"bundle's default {bundle.fista_iterations} iterations",
        "train_seconds": bundle.metrics.get("train_seconds"),
        "train_device": bundle.metrics.get("device"),
    }
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        usage = (bundle.encode(data.test_x) != 0).mean(0)
        plot_dictionary(
            bundle,
            usage,
            plots / "sparse_dictionary.png",
            f"PSD dictionary: the 100 most used of {bundle.n_atoms} atoms",
        )
        plot_iterations(curves, plots / "sparse_iterations.png")
    return results
