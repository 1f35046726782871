"""Test-set evaluation of the MNIST bundles, with their plots.

Digits: test error of both recognisers, the confusion matrix and per-class errors of the default one,
and the worst-classified test images (lowest probability on the true class).
Images: squared reconstruction error per test image (summed over the 784 pixels) for the autoencoder
and for 30-D PCA fitted on the same training images; precision@100 of Hamming ranking with the binary
codes (test queries against the 60,000 training images), overall and by class; reconstructions and a
2-D map of the codes.

Inference goes through the numpy bundles, exactly as the service runs it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from bundles.vision import DIGIT_VARIANTS, DigitBundle, ImageBundle  # noqa: E402
from training.mnist import MnistSplits  # noqa: E402

log = logging.getLogger(__name__)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """counts[i, j] = number of images of class i predicted as j.  (n_classes, n_classes) int."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def evaluate_digits(bundle_path: Path, data: MnistSplits, plots: Path | None = None) -> dict[str, Any]:
    """Test errors of both variants; details and plots for the default one."""
    bundle = DigitBundle.load(bundle_path)
    x, y = data.test_x, data.test_y
    probs = {v: bundle.predict_proba(x, v) for v in DIGIT_VARIANTS}
    test_error = {v: float((p.argmax(1) != y).mean()) for v, p in probs.items()}
    best = probs[bundle.default_variant]
    pred = best.argmax(1)
    counts = confusion_matrix(y, pred, bundle.n_classes)
    per_class = {str(c): float(1 - counts[c, c] / counts[c].sum()) for c in range(bundle.n_classes)}
    results = {
        "bundle_id": bundle.bundle_id,
        "default_variant": bundle.default_variant,
        "test_error": test_error,
        "per_class_error": per_class,
        "confusion_matrix": counts.tolist(),
        "validation_error": bundle.metrics.get("validation_error"),
        "train_seconds": bundle.metrics.get("train_seconds"),
        "train_device": bundle.metrics.get("device"),
    }
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        _plot_confusion(
            counts, plots / "digits_confusion.png", bundle.default_variant, test_error[bundle.default_variant]
        )
        worst = np.argsort(best[np.arange(len(y)), y])[:36]
        titles = [f"{y[i]}->{pred[i]} ({best[i, pred[i]]:.2f})" for i in worst]
        _image_grid(
            x[worst], titles, plots / "digits_worst.png", "worst-classified test images: true->predicted (p)"
        )
    return results


def evaluate_images(bundle_path: Path, data: MnistSplits, plots: Path | None = None) -> dict[str, Any]:
    """Reconstruction errors (autoencoder vs PCA), binary-code precision@100, plots."""
    bundle = ImageBundle.load(bundle_path)
    x, y = data.test_x, data.test_y
    codes = bundle.encode(x)
    recon = bundle.reconstruct(codes)
    pca = PCA(n_components=bundle.code_size, random_state=0).fit(data.train_x)
    recon_pca = np.clip(pca.inverse_transform(pca.transform(x)), 0.0, 1.0)
    mse = {
        "autoencoder": float(((recon - x) ** 2).sum(1).mean()),
        "pca": float(((recon_pca - x) ** 2).sum(1).mean()),
    }
    database_x, database_y = data.full_train_x, data.full_train_y
    bits_q, bits_db = bundle.binary_codes(x), bundle.binary_codes(database_x)
    hits_binary = hamming_hits_at_k(bits_q, y, bits_db, database_y, k=100)
    hits_real = euclidean_hits_at_k(codes, y, bundle.encode(database_x), database_y, k=100)
    results = {
        "bundle_id": bundle.bundle_id,
        "reconstruction_mse": mse,
        "precision_at_100": {"binary_code": float(hits_binary.mean()), "real_code": float(hits_real.mean())},
        "precision_at_100_by_class": {
            str(c): {
                "binary_code": float(hits_binary[y == c].mean()),
                "real_code": float(hits_real[y == c].mean()),
            }
            for c in range(10)
        },
        "code_bits": int(bits_q.shape[1]),
        "search": "test images as queries against the 60,000 training images; Hamming ties broken by index",
        "validation_mse": bundle.metrics.get("validation_mse"),
        "train_seconds": bundle.metrics.get("train_seconds"),
        "train_device": bundle.metrics.get("device"),
    }
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        show = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)])
        rows = np.concatenate([x[show], recon[show], recon_pca[show]])
        titles = ["original"] + [""] * 19 + ["autoencoder"] + [""] * 19 + ["PCA 30-D"] + [""] * 19
        _image_grid(
            rows,
            titles,
            plots / "images_reconstructions.png",
            "test images, 30-D autoencoder, 30-D PCA",
            cols=20,
        )
        _plot_code_map(codes[:2000], y[:2000], plots / "images_code_map.png")
    return results


def hamming_hits_at_k(
    query: np.ndarray, query_y: np.ndarray, db: np.ndarray, db_y: np.ndarray, k: int = 100, chunk: int = 500
) -> np.ndarray:
    """Per query, the fraction of its k nearest database codes (Hamming distance) with the same label.

    For bits q, d in {0, 1}: Hamming(q, d) = |q| + |d| - 2 q.d, one product per chunk (exact in float32).
    """
    q, d = query.astype(np.float32), db.astype(np.float32)
    d_ones = d.sum(1)
    hits = np.empty(len(q))
    for s in range(0, len(q), chunk):
        qs = q[s : s + chunk]
        dist = qs.sum(1)[:, None] + d_ones[None, :] - 2 * (qs @ d.T)  # (chunk, n_db) Hamming distances
        hits[s : s + chunk] = _hits(dist, query_y[s : s + chunk], db_y, k)
    return hits


def euclidean_hits_at_k(
    query: np.ndarray, query_y: np.ndarray, db: np.ndarray, db_y: np.ndarray, k: int = 100, chunk: int = 500
) -> np.ndarray:
    """As `hamming_hits_at_k`, with Euclidean distance between real-valued codes."""
    hits = np.empty(len(query))
    db_sq = (db**2).sum(1)
    for s in range(0, len(query), chunk):
        qs = query[s : s + chunk]
        dist = db_sq[None] - 2 * qs @ db.T  # |q|^2 is the same along a row, so it does not change the order
        hits[s : s + chunk] = _hits(dist, query_y[s : s + chunk], db_y, k)
    return hits


def _hits(dist: np.ndarray, query_y: np.ndarray, db_y: np.ndarray, k: int) -> np.ndarray:
    nearest = np.argpartition(dist, k, axis=1, kind="introselect")[:, :k]
    precision: np.ndarray = (db_y[nearest] == query_y[:, None]).mean(axis=1)
    return precision


def _plot_confusion(counts: np.ndarray, path: Path, variant: str, error: float) -> None:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    shown = counts.astype(float).copy()
    np.fill_diagonal(shown, np.nan)  # the diagonal would swamp the colour scale
    im = ax.imshow(shown, cmap="Reds")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"MNIST test confusion ({variant} DBN, error {100 * error:.2f}%)")
    fig.colorbar(im, ax=ax, label="errors")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _image_grid(images: np.ndarray, titles: list[str], path: Path, suptitle: str, cols: int = 6) -> None:
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.45), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(image.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_code_map(codes: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """t-SNE of the 30-D codes (the seed shows UNI-SNE), coloured by class; labels are not used to fit it."""
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(codes)
    fig, ax = plt.subplots(figsize=(7, 6))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4)
    ax.legend(*scatter.legend_elements(), title="digit", fontsize=7, loc="best", markerscale=0.8)
    ax.set_title(f"t-SNE of 30-D autoencoder codes ({len(codes)} test images)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
