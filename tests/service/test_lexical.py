"""The full-vocabulary BM25 index: scores by hand and against the baseline's implementation, statistics
under upserts and deletes, the rarest-words candidate source, and row-id to index-position lookup."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from bundles.text_features import TOKEN_PATTERN
from service.codes import long_codes_to_words
from service.index import BitIndex
from service.index_writer import Changes, SegmentedIndex
from service.lexical import LexicalIndex, terms_of
from service.search import positions_of_rows
from training.text_baselines import bm25_database

TEXTS = ["Clipper chip encryption", "the chip, the chip and a design", "hockey game"]


def test_bm25_matches_a_hand_computed_example() -> None:
    index = LexicalIndex.build([10, 20, 30], TEXTS)
    # Non-stop tokens: d10 = clipper chip encryption (3), d20 = chip chip design (3), d30 = hockey game (2).
    assert len(index) == 3 and index.average_length == pytest.approx(8 / 3)
    assert index.document_frequency("chip") == 2 and index.document_frequency("the") == 0
    query = index.query("chip clipper")
    assert query.term_ids.tolist() == [index._terms["clipper"], index._terms["chip"]]  # rarest first
    slots = index.slots_of_rows(np.array([10, 20, 30]))
    scores = index.scores(query, slots)
    k1, b, avgdl = 1.2, 0.75, 8 / 3
    idf_chip = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    idf_clipper = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))

    def saturated(tf: float, length: float) -> float:
        return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))

    expected = [
        idf_chip * saturated(1, 3) + idf_clipper * saturated(1, 3),
        idf_chip * saturated(2, 3),
        0.0,
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def _random_corpus(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(60)] + ["clipper", "hockey", "orbit"]
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    return [" ".join(rng.choice(words, int(rng.integers(1, 40)), p=weights)) for _ in range(n)]


def test_bm25_equals_the_baseline_implementation_over_the_whole_collection() -> None:
    texts = _random_corpus(1, 300)
    index = LexicalIndex.build(list(range(300)), texts)
    vectorizer = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words="english", dtype=np.float32)
    weights = bm25_database(sp.csr_matrix(vectorizer.fit_transform(texts)))
    for query_text in ["w3 clipper", "hockey hockey w1 orbit", "w59"]:
        expected = np.asarray(weights @ vectorizer.transform([query_text]).T.todense()).ravel()
        slots, scores = index.exhaustive(index.query(query_text))
        got = np.zeros(300)
        got[index.rows_of_slots(slots)] = scores
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_statistics_stay_exact_under_upserts_and_deletes() -> None:
    texts = _random_corpus(2, 200)
    index = LexicalIndex.build(list(range(200)), texts)
    rng = np.random.default_rng(3)
    live = dict(enumerate(texts))
    for step in range(6):
        replaced = rng.choice(200, 15, replace=False).tolist()
        new_texts = _random_corpus(10 + step, 15)
        deleted = [row in live and rng.random() < 0.4 for row in replaced]
        index.apply(replaced, new_texts, deleted)
        for row, text, gone in zip(replaced, new_texts, deleted, strict=True):
            if gone:
                live.pop(row, None)
            else:
                live[row] = text
        fresh = LexicalIndex.build(list(live), list(live.values()))
        assert len(index) == len(fresh) and index.average_length == pytest.approx(fresh.average_length)
        assert sorted(index.rows()) == sorted(live)
        for term in ("w0", "w7", "clipper", "orbit"):
            assert index.document_frequency(term) == fresh.document_frequency(term)
        query = "w2 clipper orbit w40"
        got_slots, got = index.exhaustive(index.query(query))
        want_slots, want = fresh.exhaustive(fresh.query(query))
        got_rows, want_rows = index.rows_of_slots(got_slots), fresh.rows_of_slots(want_slots)
        np.testing.assert_allclose(got[np.argsort(got_rows)], want[np.argsort(want_rows)], rtol=1e-5)
    compacted = index.compacted()
    assert sorted(compacted.rows()) == sorted(live) and len(compacted) == len(index)
    a_slots, a = index.exhaustive(index.query("w5 orbit"))
    b_slots, c = compacted.exhaustive(compacted.query("w5 orbit"))
    a_rows, b_rows = index.rows_of_slots(a_slots), compacted.rows_of_slots(b_slots)
    np.testing.assert_allclose(a[np.argsort(a_rows)], c[np.argsort(b_rows)], rtol=1e-6)


def test_many_replacements_trigger_compaction() -> None:
    index = LexicalIndex.build(list(range(10)), ["alpha beta"] * 10)
    for _ in range(120):
        index.apply(list(range(10)), ["alpha gamma"] * 10, [False] * 10)
    assert index.needs_compaction()
    compacted = index.compacted()
    assert not compacted.needs_compaction() and compacted.document_frequency("gamma") == 10
    assert compacted.document_frequency("beta") == 0


def test_candidates_take_whole_postings_of_the_rarest_words_within_the_budget() -> None:
    texts = ["common rare1"] + ["common"] * 30 + ["common medium"] * 5
    index = LexicalIndex.build(list(range(len(texts))), texts)
    query = index.query("common medium rare1 unseen")
    assert query.unknown == 1
    slots, read = index.candidates(query, budget=10)
    assert sorted(index.rows_of_slots(slots).tolist()) == [0, 31, 32, 33, 34, 35] and read == 6
    slots, read = index.candidates(query, budget=3)
    assert index.rows_of_slots(slots).tolist() == [0] and read == 1
    assert terms_of("The, of AND a!") == {}


def test_positions_of_rows_finds_base_and_delta_documents_and_skips_dead_ones() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    base = BitIndex.build(8, [1, 2, 3, 4], ["a", "b", "c", "d"], [1, 2, 3, 4], long_codes_to_words(codes[:4]))
    writer = SegmentedIndex(base.base)
    changes = Changes(  # row 2 deleted, row 3 replaced (its live version moves to the delta), 5 and 7 new
        np.array([2, 3, 5, 7]),
        np.array([True, False, False, False]),
        ["", "c2", "e", "f"],
        np.array([0, 3, 5, 7], np.uint64),
        long_codes_to_words(codes[[1, 2, 4, 5]]),
    )
    snapshot = writer.apply(changes)
    positions = positions_of_rows(snapshot, np.array([1, 2, 3, 5, 7, 99]))
    assert positions[1] == -1 and positions[5] == -1
    found = positions[[0, 2, 3, 4]]
    assert snapshot.row_ids_at(found).tolist() == [1, 3, 5, 7]
    assert snapshot.external_ids_at(found) == ["a", "c2", "e", "f"]
    assert (
        positions_of_rows(base, np.array([4, 3])).tolist() == base.base.find_rows(np.array([4, 3])).tolist()
    )


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_documents_appended_in_small_batches_index_as_one_batch_does(batch: int) -> None:
    # Batches of up to _SMALL_BATCH documents append entry by entry, larger ones term by term: the
    # postings, statistics and scores must not depend on which.
    texts = _random_corpus(7, 60)
    whole = LexicalIndex.build(list(range(60)), texts)
    piecewise = LexicalIndex.build([], [])
    for start in range(0, 60, batch):
        rows = list(range(start, min(start + batch, 60)))
        piecewise.apply(rows, texts[rows[0] : rows[-1] + 1], [False] * len(rows))
    for term in ("w0", "w3", "w17", "clipper"):
        assert piecewise.document_frequency(term) == whole.document_frequency(term)
    for query in ("w2 clipper orbit w40", "w5 w5 w1"):
        a_slots, a = piecewise.exhaustive(piecewise.query(query))
        b_slots, b = whole.exhaustive(whole.query(query))
        np.testing.assert_array_equal(piecewise.rows_of_slots(a_slots), whole.rows_of_slots(b_slots))
        np.testing.assert_allclose(a, b, rtol=1e-6)
