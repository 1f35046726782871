"""BitIndex: the Hamming-ball lookup against a brute-force scan, ordering, limits, probes, ids."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.codes import long_codes_to_words, xor_masks
from service.index import BitIndex
from service.index_segments import IdStore


def random_documents(
    rng: np.random.Generator, n: int, address_bits: int, long_bytes: int = 8
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Row ids, external ids, addresses and long-code words of n random documents."""
    addresses = rng.integers(0, 1 << address_bits, n, dtype=np.uint64)
    codes = rng.integers(0, 256, (n, long_bytes), dtype=np.uint8)
    return np.arange(n), [f"d{i}" for i in range(n)], addresses, long_codes_to_words(codes)


def random_index(rng: np.random.Generator, n: int, address_bits: int, long_bytes: int = 8) -> BitIndex:
    return BitIndex.build(address_bits, *random_documents(rng, n, address_bits, long_bytes))


def test_xor_masks_cover_each_radius_once_in_popcount_order() -> None:
    table = xor_masks(12, 3)
    assert len(table.masks) == sum(comb(12, r) for r in range(4))
    assert len(np.unique(table.masks)) == len(table.masks)
    assert np.array_equal(np.bitwise_count(table.masks), table.popcounts)
    assert np.all(np.diff(table.popcounts.astype(int)) >= 0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    address_bits=st.sampled_from([4, 8, 13, 20, 28, 32]),
    radius=st.integers(0, 4),
)
def test_lookup_equals_brute_force_in_distance_order(
    seed: int, n: int, address_bits: int, radius: int
) -> None:
    rng = np.random.default_rng(seed)
    index = random_index(rng, n, address_bits)
    query = int(rng.integers(0, 1 << address_bits))
    shortlist = index.lookup(query, radius, limit=10_000)
    assert sorted(shortlist.positions.tolist()) == sorted(index.brute_force_ball(query, radius).tolist())
    assert np.array_equal(
        shortlist.distances, np.bitwise_count(index.addresses_at(shortlist.positions) ^ np.uint32(query))
    )
    assert np.all(np.diff(shortlist.distances.astype(int)) >= 0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    address_bits=st.sampled_from([3, 6, 9, 26]),
    radius=st.integers(0, 3),
    limit=st.integers(1, 400),
)
def test_a_limit_cuts_the_full_ball_in_its_order(
    seed: int, n: int, address_bits: int, radius: int, limit: int
) -> None:
    """Runs of every length (many documents per address at 3-9 bits, hashed cells at 26), cut by the
    limit anywhere: the shortlist is the first `limit` of the whole ball, positions and distances."""
    rng = np.random.default_rng(seed)
    index = random_index(rng, n, address_bits)
    query = int(rng.integers(0, 1 << address_bits))
    full = index.lookup(query, radius, limit=10_000)
    cut = index.lookup(query, radius, limit)
    assert cut.positions.tolist() == full.positions[:limit].tolist()
    assert cut.distances.tolist() == full.distances[:limit].tolist()
    probes = rng.integers(0, 1 << address_bits, 8)
    whole, first = index.probe(probes, 10_000), index.probe(probes, limit)
    assert first.positions.tolist() == whole.positions[:limit].tolist()
    assert first.probe_indices.tolist() == whole.probe_indices[:limit].tolist()


def test_dense_and_hashed_cells_agree() -> None:
    row_ids, ids, addresses, words = random_documents(np.random.default_rng(2), 3000, 16)
    small = BitIndex.build(16, row_ids, ids, addresses, words)
    # The same documents in a 28-bit index, where a dense table would be too big: hashed cells.
    wide = BitIndex.build(28, row_ids, ids, addresses, words)
    assert small.has_dense_table and not wide.has_dense_table
    query = int(addresses[0])
    for radius in range(4):
        dense_hits = small.row_ids_at(small.lookup(query, radius, 10_000).positions)
        hashed_hits = wide.row_ids_at(wide.lookup(query, radius, 10_000).positions)
        assert sorted(dense_hits) == sorted(hashed_hits)


def test_limit_keeps_the_nearest_and_stops_probing_early() -> None:
    rng = np.random.default_rng(3)
    index = random_index(rng, 20_000, 12)  # ~5 documents per address
    query = 77
    full = index.lookup(query, 3, 10_000)
    cut = index.lookup(query, 3, 50)
    assert len(cut.positions) == 50
    assert cut.probed < full.probed
    # Every document left out is at least as far as the farthest one kept.
    assert int(cut.distances.max()) <= int(np.sort(full.distances)[50])
    assert set(cut.positions.tolist()) <= set(full.positions.tolist())


def test_lookup_rejects_out_of_range_queries() -> None:
    index = random_index(np.random.default_rng(4), 10, 8)
    with pytest.raises(ValueError, match="address"):
        index.lookup(256, 1, 10)
    with pytest.raises(ValueError, match="limit"):
        index.lookup(1, 1, 0)


def test_long_code_distances_match_python_popcount() -> None:
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 256, (50, 16), dtype=np.uint8)  # 128-bit long codes
    index = BitIndex.build(
        8,
        np.arange(50),
        [str(i) for i in range(50)],
        np.arange(50, dtype=np.uint64),
        long_codes_to_words(codes),
    )
    query = rng.integers(0, 256, 16, dtype=np.uint8)
    positions = np.arange(50)
    got = index.long_code_distances(positions, long_codes_to_words(query[np.newaxis])[0])
    expected = [
        bin(int.from_bytes(codes[row].tobytes(), "big") ^ int.from_bytes(query.tobytes(), "big")).count("1")
        for row in index.row_ids_at(positions).tolist()
    ]
    assert got.tolist() == expected


def test_long_codes_shorter_than_a_word_are_padded() -> None:
    words = long_codes_to_words(np.array([[0xFF, 0x01, 0x80]], dtype=np.uint8))
    assert words.shape == (1, 1)
    assert int(np.bitwise_count(words).sum()) == 10


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 300),
    address_bits=st.sampled_from([6, 12, 28]),
    probes=st.integers(0, 40),
    limit=st.integers(1, 400),
)
def test_probe_returns_each_address_run_in_order_until_the_limit(
    seed: int, n: int, address_bits: int, probes: int, limit: int
) -> None:
    rng = np.random.default_rng(seed)
    row_ids, ids, stored, words = random_documents(rng, n, address_bits)
    index = BitIndex.build(address_bits, row_ids, ids, stored, words)
    # Probe addresses that hold documents as well as empty ones, some of them twice.
    pool = np.concatenate([stored, rng.integers(0, 1 << address_bits, 8, dtype=np.uint64)])
    addresses = rng.choice(pool, probes) if probes else np.zeros(0, np.uint64)
    expected = [
        (int(position), i)
        for i, address in enumerate(addresses.tolist())
        for position in index.lookup(int(address), 0, 10_000).positions.tolist()
    ]
    got = index.probe(addresses, limit)
    assert list(zip(got.positions.tolist(), got.probe_indices.tolist(), strict=True)) == expected[:limit]
    assert got.probed == (len(addresses) if len(expected) < limit else expected[limit - 1][1] + 1)


def test_probe_rejects_addresses_outside_the_address_space() -> None:
    index = random_index(np.random.default_rng(7), 10, 8)
    with pytest.raises(ValueError, match="address"):
        index.probe([1, 256], 10)
    with pytest.raises(ValueError, match="address"):
        index.probe([-1], 10)
    with pytest.raises(ValueError, match="limit"):
        index.probe([1], 0)


@settings(max_examples=50, deadline=None)
@given(ids=st.lists(st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f"), min_size=1)))
def test_id_store_round_trips_any_valid_id(ids: list[str]) -> None:
    store = IdStore.from_strings(ids)
    positions = np.arange(len(ids))[::-1]
    assert store.strings(positions) == ids[::-1]
    assert store.take(positions).strings(np.arange(len(ids))) == ids[::-1]


def test_id_store_still_reads_ids_holding_the_separator() -> None:
    # Ids are checked at the API, but a row written around it must not shift every id after it.
    store = IdStore.from_strings(["a\x1fb", "c"])
    assert store.strings(np.array([1, 0])) == ["c", "a\x1fb"]
