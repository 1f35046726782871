"""Multi-probe order against brute force over every address of small codes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundles.probes import MAX_LOGIT, flip_costs, most_likely_address, probe_addresses, probe_order


def brute_force_costs(probabilities: np.ndarray) -> np.ndarray:
    """log P(best address) - log P(address) for all 2^b addresses (bit 0 most significant), with every
    |logit| capped at MAX_LOGIT as the module caps it (so certain bits stay finite)."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.clip(np.log(p) - np.log1p(-p), -MAX_LOGIT, MAX_LOGIT)
    bits = p.shape[0]
    addresses = np.arange(1 << bits)
    on = (addresses[:, None] >> (bits - 1 - np.arange(bits))[None, :]) & 1
    log_likelihood = (on * logits).sum(axis=1)  # log P(address) up to a constant: sum_j on_j logit_j
    return log_likelihood.max() - log_likelihood


probabilities_strategy = st.integers(1, 10).flatmap(
    lambda bits: st.lists(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 1.0, 0.25, 0.75])),
        min_size=bits,
        max_size=bits,
    )
)


@settings(max_examples=200, deadline=None)
@given(probabilities_strategy, st.integers(0, 1100))
def test_probes_are_the_most_likely_addresses_in_order(values: list[float], budget: int) -> None:
    p = np.asarray(values)
    bits = p.shape[0]
    addresses, costs = probe_order(p, budget)
    expected = min(budget, 1 << bits)
    assert addresses.shape == costs.shape == (expected,)
    assert len(set(addresses.tolist())) == expected  # no address twice
    assert ((addresses >= 0) & (addresses < (1 << bits))).all()
    if expected == 0:
        return
    brute = brute_force_costs(p)
    # each probe's cost is its log-likelihood below the best address's ...
    np.testing.assert_allclose(brute[addresses], costs, atol=1e-9)
    # ... costs never decrease, and the k probes are k most likely addresses (ties may go either way)
    assert (np.diff(costs) >= 0).all()
    np.testing.assert_allclose(np.sort(brute)[:expected], costs, atol=1e-9)
    assert addresses[0] == most_likely_address(p)


def test_all_addresses_of_a_small_code_come_out_once() -> None:
    p = np.array([0.9, 0.2, 0.55, 0.99, 0.01, 0.7])
    addresses = probe_addresses(p, 1000)
    assert sorted(addresses.tolist()) == list(range(64))


def test_uncertain_bits_flip_first() -> None:
    # bit 0 (most significant) is near certain, bit 2 is a coin flip, bit 1 fairly sure
    p = np.array([0.999, 0.1, 0.5])
    addresses = probe_addresses(p, 4).tolist()
    assert addresses[0] == 0b100  # the most likely address
    assert addresses[1] == 0b101  # flip the coin-flip bit
    # then the fairly sure bit, alone or with the coin flip (which costs 0: a tie)
    assert set(addresses[2:]) == {0b110, 0b111}


def test_bad_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        flip_costs(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        flip_costs(np.array([np.nan]))
    with pytest.raises(ValueError, match="shape"):
        flip_costs(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="budget"):
        probe_order(np.array([0.5]), -1)


def test_flip_costs_are_absolute_logits() -> None:
    costs = flip_costs(np.array([0.0, 1.0, 0.5, 0.9, 0.1]))
    np.testing.assert_allclose(costs, [MAX_LOGIT, MAX_LOGIT, 0.0, np.log(9), np.log(9)], rtol=1e-12)
