"""SegmentedIndex: random writes, deletes and merges against a plain dict of the live documents.

Every version an index published is kept and checked at the end against the model as it was then:
a search holding an old version must keep seeing exactly that version, whatever was written or
merged after it.
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.codes import xor_masks
from service.index import BitIndex
from service.index_segments import IdStore, Segment
from service.index_writer import Changes, SegmentedIndex, occupancy_warning

WORDS = 1
Model = dict[int, tuple[str, int, int]]  # row id -> (external id, address, long-code word)


def changes_of(batch: dict[int, int | None], serial: int) -> tuple[Changes, Model]:
    """The Changes for {row id: new address, or None to delete}, and the rows it makes live."""
    rows = sorted(batch)
    live: Model = {
        row: (f"r{row}-{serial}", address, (row * 7919 + serial) % 2**63)
        for row, address in batch.items()
        if address is not None
    }
    changes = Changes(
        np.array(rows, np.int64),
        np.array([batch[row] is None for row in rows]),
        [live[row][0] if row in live else "" for row in rows],
        np.array([live[row][1] if row in live else 0 for row in rows], np.uint64),
        np.array([[live[row][2] if row in live else 0] for row in rows], np.uint64).reshape(len(rows), WORDS),
    )
    return changes, live


def check(index: BitIndex, model: Model, address_bits: int, rng: np.random.Generator) -> None:
    """Everything a search can read of `index` equals the model."""
    assert len(index) == len(model)
    positions = index.live_positions()
    rows = index.row_ids_at(positions).tolist()
    assert sorted(rows) == sorted(model)
    stored = zip(
        rows,
        index.external_ids_at(positions),
        index.addresses_at(positions).tolist(),
        index.long_words_at(positions)[:, 0].tolist(),
        strict=True,
    )
    assert {row: (external_id, address, word) for row, external_id, address, word in stored} == model
    queries = (
        rng.integers(0, 1 << address_bits, 6).tolist() + [address for _, address, _ in model.values()][:6]
    )
    for query in queries:
        for radius in range(3):
            shortlist = index.lookup(query, radius, 10_000)
            found = index.row_ids_at(shortlist.positions).tolist()
            expected = {
                row for row, (_, address, _) in model.items() if (address ^ query).bit_count() <= radius
            }
            assert sorted(found) == sorted(expected)
            assert shortlist.distances.tolist() == [(model[row][1] ^ query).bit_count() for row in found]
            assert shortlist.distances.tolist() == sorted(shortlist.distances.tolist())
            assert shortlist.probed == len(xor_masks(address_bits, radius).masks)
            for limit in (1, 2, 5):  # a limit cuts the ball in its order, through dead and delta entries
                cut = index.lookup(query, radius, limit)
                assert cut.positions.tolist() == shortlist.positions[:limit].tolist()
                assert cut.distances.tolist() == shortlist.distances[:limit].tolist()
    probes = rng.integers(0, 1 << address_bits, 5)
    probed = index.probe(probes, 10_000)
    got = sorted(zip(probed.probe_indices.tolist(), index.row_ids_at(probed.positions).tolist(), strict=True))
    expected_pairs = sorted(
        (i, row)
        for i, probe in enumerate(probes.tolist())
        for row, entry in model.items()
        if entry[1] == probe
    )
    assert got == expected_pairs


batches = st.dictionaries(st.integers(0, 12), st.one_of(st.none(), st.integers(0, 2**32 - 1)), max_size=6)
steps = st.one_of(
    batches.map(lambda batch: ("write", batch)),
    st.just(("merge_start", None)),
    st.just(("merge_finish", None)),
)


@settings(max_examples=120, deadline=None)
@given(
    address_bits=st.sampled_from([5, 9, 28]),
    initial=st.dictionaries(st.integers(0, 20), st.integers(0, 2**32 - 1), max_size=16),
    script=st.lists(steps, max_size=25),
    seed=st.integers(0, 2**16),
)
# What a merge must replay: a delta document deleted, and a base document replaced, after it began.
@example(5, {}, [("write", {0: 0}), ("merge_start", None), ("write", {0: None}), ("merge_finish", None)], 0)
@example(9, {1: 3}, [("merge_start", None), ("write", {1: 8, 2: None}), ("merge_finish", None)], 0)
def test_versions_match_the_model_through_writes_and_merges(
    address_bits: int, initial: dict[int, int], script: list, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mask = (1 << address_bits) - 1
    # Few distinct addresses in wide address spaces too, so that hashed cells and chains collide.
    pool = rng.integers(0, 1 << address_bits, 12).tolist()

    def address_of(drawn: int) -> int:
        return pool[drawn % len(pool)] if drawn % 2 else drawn & mask

    changes, model = changes_of({row: address_of(a) for row, a in initial.items()}, 0)
    base = Segment.build(
        address_bits,
        changes.row_ids,
        IdStore.from_strings(changes.external_ids),
        changes.addresses,
        changes.long_words,
    )
    index = SegmentedIndex(base)
    versions: list[tuple[BitIndex, Model]] = [(index.snapshot, dict(model))]
    pending: tuple[Segment, BitIndex] | None = None
    for serial, (step, batch) in enumerate(script, start=1):
        if step == "write":
            batch = {row: None if a is None else address_of(a) for row, a in batch.items()}
            changes, live = changes_of(batch, serial)
            for row, address in batch.items():
                if address is None:
                    model.pop(row, None)
            model.update(live)
            versions.append((index.apply(changes), dict(model)))
        elif step == "merge_start":
            since = index.snapshot
            pending = (SegmentedIndex.merge(since), since)
        elif pending is not None:
            index = index.rebased(*pending)
            pending = None
            versions.append((index.snapshot, dict(model)))
    for version, expected in versions:
        check(version, expected, address_bits, rng)


def test_a_merge_folds_the_delta_and_drops_dead_documents() -> None:
    changes, _ = changes_of({row: row % 32 for row in range(100)}, 0)
    ids = IdStore.from_strings(changes.external_ids)
    index = SegmentedIndex(Segment.build(10, changes.row_ids, ids, changes.addresses, changes.long_words))
    changes, _ = changes_of({**dict.fromkeys(range(0, 100, 2)), 500: 7, 501: 7}, 1)
    before = index.snapshot
    index.apply(changes)
    assert index.delta_size == 2 and index.dead_in_base == 50
    since = index.snapshot
    merged = index.rebased(SegmentedIndex.merge(since), since)
    assert len(merged.base) == 52 and merged.delta_size == 0 and merged.dead_in_base == 0
    at_7 = merged.snapshot.row_ids_at(merged.snapshot.lookup(7, 0, 100).positions)
    assert sorted(at_7.tolist()) == [7, 39, 71, 500, 501]
    # A search still holding the version before the writes sees it unchanged.
    assert sorted(before.row_ids_at(before.lookup(7, 0, 100).positions).tolist()) == [7, 39, 71]
    assert len(before) == 100


def test_occupancy_warning_only_for_a_collection_that_outgrew_its_addresses() -> None:
    assert occupancy_warning("c", 16 * 2**10, 10) is None
    assert occupancy_warning("c", 3, 20) is None
    warning = occupancy_warning("c", 10_000_000, 16)
    assert warning is not None and "outgrown its 16-bit addresses" in warning and "24 address bits" in warning
