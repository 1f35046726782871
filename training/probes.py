"""Multi-probe: the addresses of a query in decreasing likelihood under its code units' probabilities.

A query's address code is a vector of independent Bernoulli probabilities p_j (j = 0 .. b-1, bit 0 the
most significant bit of the address). The most likely address sets bit j = [p_j > 1/2]; any other
address differs from it in a flip set F of bits, and its log-likelihood is lower by

    cost(F) = sum_{j in F} |logit p_j|,        logit p = ln(p / (1 - p)),

so probing addresses in increasing cost probes them in decreasing likelihood (Lv et al., "Multi-probe
LSH", VLDB 2007). Uncertain bits (p near 1/2, cost near 0) are flipped first, instead of every bit
alike as a Hamming ball of fixed radius does.

Generation without enumerating all 2^b flip sets: sort the bits by cost, c_0 <= c_1 <= ... and
represent a flip set as an increasing list of sorted positions. Every non-empty set is reached exactly
once from {0} by the two moves

    shift(F):  replace the largest position i by i + 1          (cost + c_{i+1} - c_i >= cost)
    expand(F): add position i + 1 after the largest position i  (cost + c_{i+1} >= cost)

both of which never lower the cost, so a min-heap over costs pops flip sets in non-decreasing cost
order. `budget` addresses cost O(budget * log budget) time and memory, whatever b (heap pushes sum
the flip set's costs afresh, so rounding never reorders them).
"""

from __future__ import annotations

import heapq
import math

import numpy as np

MAX_LOGIT = 30.0  # |logit| cap: p within ~1e-13 of 0 or 1 is treated as certain, never infinite


def flip_costs(probabilities: np.ndarray) -> np.ndarray:
    """|logit p_j| of every bit, finite (capped at MAX_LOGIT).  (b,) probabilities -> (b,) float64."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"probabilities must be one query's (bits,) vector, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite numbers in [0, 1]")
    with np.errstate(divide="ignore"):
        logits = np.log(p) - np.log1p(-p)
    return np.minimum(np.abs(logits), MAX_LOGIT)


def most_likely_address(probabilities: np.ndarray) -> int:
    """The address whose bit j is p_j > 1/2 (bit 0 most significant)."""
    bits = np.asarray(probabilities) > 0.5
    address = 0
    for bit in bits:
        address = (address << 1) | int(bit)
    return address


def probe_order(probabilities: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The `budget` most likely addresses (fewer when 2^b < budget), most likely first.

    Returns (addresses (k,) int64, costs (k,) float64), costs non-decreasing: the log-likelihood of
    addresses[i] is that of addresses[0] minus costs[i]. Ties in cost come out in a fixed order (by
    the flip sets' sorted positions), so the result is deterministic.
    """
    costs = flip_costs(probabilities)
    bits = costs.shape[0]
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    budget = min(int(budget), 1 << bits)
    if budget == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    order = np.argsort(costs, kind="stable")  # sorted position -> bit
    sorted_costs = costs[order]
    # bit j is worth 2^(b-1-j) in the address
    masks = [1 << (bits - 1 - int(bit)) for bit in order]
    base = most_likely_address(probabilities)
    addresses, probe_costs = [base], [0.0]
    # heap entries: (cost, flip set as a tuple of sorted positions, its XOR mask)
    heap: list[tuple[float, tuple[int, ...], int]] = []
    if bits:
        heap.append((float(sorted_costs[0]), (0,), masks[0]))
    while heap and len(addresses) < budget:
        cost, flips, mask = heapq.heappop(heap)
        addresses.append(base ^ mask)
        probe_costs.append(cost)
        last = flips[-1]
        if last + 1 < bits:
            for child in ((*flips[:-1], last + 1), (*flips, last + 1)):  # shift, expand
                child_mask = (
                    mask ^ masks[last] ^ masks[last + 1]
                    if len(child) == len(flips)
                    else mask ^ masks[last + 1]
                )
                # summed afresh (not cost +- steps) so equal flip sets always get equal, exact costs
                heapq.heappush(heap, (math.fsum(sorted_costs[i] for i in child), child, child_mask))
    return np.asarray(addresses, dtype=np.int64), np.asarray(probe_costs, dtype=np.float64)


def probe_addresses(probabilities: np.ndarray, budget: int) -> np.ndarray:
    """Addresses in decreasing likelihood, at most `budget`: the list `BitIndex.probe` looks up."""
    return probe_order(probabilities, budget)[0]
