"""PNG plots of a text evaluation: precision-recall curves (slide 80) and a 2-D map of documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: Path, title: str) -> Path:
    """One precision-vs-recall line per method; recall on a log axis as in the paper's figures.

    `curves`: method name -> {"precision": [...], "recall": [...]}.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, curve in curves.items():
        style = "-" if name.startswith("semantic") else "--"
        ax.plot(curve["recall"], curve["precision"], style, marker=".", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("recall (log scale)")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_document_map(
    activations: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    path: Path,
    title: str,
    *,
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """t-SNE of code activations (n, bits) of up to `max_points` documents, coloured by label."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(activations), size=min(max_points, len(activations)), replace=False)
    perplexity = float(min(30, max(2, (len(rows) - 1) // 3)))
    xy = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(
        activations[rows].astype(np.float32)
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab20")
    for label in np.unique(labels[rows]):
        mine = labels[rows] == label
        ax.scatter(xy[mine, 0], xy[mine, 1], s=4, color=cmap(label % 20), label=label_names[label])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=6, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
