"""How evenly binary codes spread documents over addresses (the balance a Hamming-ball lookup needs).

A radius-r search touches the documents whose address lies within Hamming distance r of the query's.
With b-bit addresses spread uniformly, that is sum_{i<=r} C(b, i) / 2^b of the collection (0.13% for
b = 20, r = 3); when documents crowd into few addresses, a query that lands among them touches many.
`occupancy` measures the crowding from the database codes alone:

* distinct addresses used, and the share of documents in the fullest 1% of the used addresses;
* mean ball size at r = 1..3 as a fraction of the collection: mean over documents d of
  |{d' : H(a(d), a(d')) <= r}| / n, i.e. what a query distributed like the documents touches;
* per-bit balance p_j = mean of bit j (0.5 is ideal): the worst min(p_j, 1 - p_j) and mean |p_j - 0.5|;
* pairwise bit correlation (Pearson, over documents): mean and largest |corr| off the diagonal.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

RADII = (1, 2, 3)
FULLEST_SHARE = 0.01


def pack_addresses(bits: np.ndarray) -> np.ndarray:
    """(n, b) bool codes, b <= 63 -> (n,) int64 addresses, bit 0 most significant."""
    weights = 1 << np.arange(bits.shape[1] - 1, -1, -1, dtype=np.int64)
    return bits.astype(np.int64) @ weights


def flip_masks(bits: int, radius: int) -> np.ndarray:
    """XOR masks of every bit pattern with 1..radius ones among `bits` positions: (m,) int64."""
    masks = [
        sum(1 << (bits - 1 - i) for i in chosen)
        for r in range(1, radius + 1)
        for chosen in combinations(range(bits), r)
    ]
    return np.array(masks, dtype=np.int64)


def ball_fractions(bits: np.ndarray, radii: tuple[int, ...] = RADII) -> dict[str, float]:
    """Mean over documents of the share of the collection within Hamming radius r of their address.

    Works on the distinct addresses: for each, the documents at every address one XOR mask away
    (a sorted lookup), weighted by how many documents share the address.
    """
    n, width = bits.shape
    used, counts = np.unique(pack_addresses(bits), return_counts=True)
    within = counts.astype(np.float64)  # radius 0: the address itself
    result: dict[str, float] = {}
    done = 0
    for radius in sorted(radii):
        masks = flip_masks(width, radius)
        masks = masks[np.array([bin(int(m)).count("1") > done for m in masks], dtype=bool)]
        for start in range(0, len(masks), 256):
            neighbours = used[:, None] ^ masks[None, start : start + 256]  # (u, m)
            position = np.searchsorted(used, neighbours).clip(max=len(used) - 1)
            found = used[position] == neighbours
            within += np.where(found, counts[position], 0).sum(axis=1)
        done = radius
        result[str(radius)] = float((counts * within).sum() / n / n)
    return result


def occupancy(bits: np.ndarray) -> dict[str, Any]:
    """The metrics of the module docstring for (n, b) bool database codes."""
    n, width = bits.shape
    _, counts = np.unique(pack_addresses(bits), return_counts=True)
    fullest = np.sort(counts)[::-1][: max(1, int(np.ceil(FULLEST_SHARE * len(counts))))]
    on = bits.mean(axis=0)
    centred = bits.astype(np.float64) - on
    std = centred.std(axis=0)
    corr = (centred.T @ centred) / n / np.maximum(np.outer(std, std), 1e-12)
    off = np.abs(corr[~np.eye(width, dtype=bool)]) if width > 1 else np.zeros(1)
    return {
        "documents": int(n),
        "distinct_addresses": int(len(counts)),
        "distinct_fraction": float(len(counts) / n),
        "largest_address_fraction": float(counts.max() / n),
        "fullest_1pct_share": float(fullest.sum() / n),
        "mean_ball_fraction": ball_fractions(bits) if width <= 32 else None,
        "uniform_ball_fraction": {
            str(r): float(sum(_choose(width, i) for i in range(r + 1)) / 2.0**width) for r in RADII
        },
        "bit_balance_min": float(np.minimum(on, 1 - on).min()),
        "bit_balance_mean_deviation": float(np.abs(on - 0.5).mean()),
        "bit_correlation_mean_abs": float(off.mean()),
        "bit_correlation_max_abs": float(off.max()),
    }


def _choose(n: int, k: int) -> int:
    from math import comb

    return comb(n, k)


def query_ball_fraction(queries: np.ndarray, database: np.ndarray, radius: int = 3) -> float:
    """Mean share of the database within Hamming `radius` of each query: (q, b), (n, b) bool codes."""
    from training.retrieval import CHUNK, hamming_distances

    inside = sum(
        int((hamming_distances(queries[start : start + CHUNK], database) <= radius).sum())
        for start in range(0, len(queries), CHUNK)
    )
    return inside / max(1, len(queries) * len(database))
