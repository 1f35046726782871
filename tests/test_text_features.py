"""Tokenizer, vocabulary, counts and TF-IDF: the numpy encode path agrees with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from bundles.text_features import (
    TOKEN_PATTERN,
    WordIndex,
    cap_lengths,
    count_matrix,
    fit_vocabulary,
    tfidf,
    tokenize,
)

EDGE_CASES = [
    "",
    "   \n\t ",
    "!!! ... ??? -- ;;",
    "a I x y",  # single characters are not tokens
    "The THE the tHe",
    "don't can't e-mail co-operate",
    "naïve café Zürich ÉCOLE",
    "numbers 42 3.14 1993 x86",
    "under_score snake_case_word",
    "Subject: Re: [comp.graphics] 3D rendering?\nFrom: someone@cs.cmu.edu",
    "tabs\tand\nnewlines\r\nand\rcarriage returns",
    "\u212aelvin sign lowercases to ascii",  # U+212A KELVIN SIGN -> "k"
    "日本語のテキスト and ascii words",
    "arabic digits ٣٤ and mixed caféx cafe",
]
ANALYZER = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True).build_analyzer()


@pytest.mark.parametrize("text", EDGE_CASES)
def test_tokenize_matches_count_vectorizer_analyzer(text: str) -> None:
    assert tokenize(text) == ANALYZER(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("abcXYZ_09 .,-'\n\tüÉß\u212a語٣")), max_size=60))
def test_token_columns_follow_the_reference_tokenizer(text: str) -> None:
    vocabulary = ["ab", "cab", "x_9", "über", "éss", "kk", "語語", "٣٣", "09"]
    index = WordIndex(vocabulary)
    assert tokenize(text) == ANALYZER(text)
    expected = [index.columns.get(token, -1) for token in tokenize(text)]
    assert index.token_columns(text) == expected  # the ASCII fast path gives the same tokens


def test_tokenize_edge_cases() -> None:
    assert tokenize("") == []
    assert tokenize("!!! ... ???") == []
    assert tokenize("a I x") == []
    assert tokenize("don't e-mail") == ["don", "mail"]
    assert tokenize("Café NAÏVE") == ["café", "naïve"]
    assert tokenize("x86 3.14") == ["x86", "14"]


def test_vocabulary_drops_stop_words_and_keeps_most_frequent() -> None:
    texts = ["the cat sat on the mat", "the cat ate", "a dog and the cat", "zebra"]
    vocabulary, idf = fit_vocabulary(texts, size=3)
    assert "the" not in vocabulary and "and" not in vocabulary
    assert "cat" in vocabulary and len(vocabulary) == 3
    assert idf.shape == (3,)
    assert idf[vocabulary.index("cat")] < idf.max()  # the most common word has the smallest idf


def test_counts_and_tfidf_agree_with_scikit_learn() -> None:
    texts = [*EDGE_CASES, "cat cat dog", "dog bird bird bird the", "Cat, DOG! cat?"]
    vocabulary, idf = fit_vocabulary(texts, size=20)
    ours = count_matrix(texts, WordIndex(vocabulary))
    reference = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words="english", vocabulary=vocabulary)
    np.testing.assert_array_equal(ours.toarray(), reference.fit_transform(texts).toarray())
    sk_tfidf = TfidfVectorizer(token_pattern=TOKEN_PATTERN, stop_words="english", vocabulary=vocabulary)
    np.testing.assert_allclose(tfidf(ours, idf).toarray(), sk_tfidf.fit_transform(texts).toarray(), atol=1e-6)


def test_empty_rows_stay_zero_in_tfidf() -> None:
    matrix = tfidf(sp.csr_matrix(np.array([[0.0, 0.0], [1.0, 2.0]])), np.array([1.0, 1.0]))
    assert np.all(matrix.toarray()[0] == 0)
    assert np.isclose(np.linalg.norm(matrix.toarray()[1]), 1.0)


def test_cap_lengths_keeps_word_distribution() -> None:
    counts = sp.csr_matrix(np.array([[2.0, 2.0], [300.0, 100.0], [0.0, 0.0]]))
    capped = cap_lengths(counts, 40).toarray()
    np.testing.assert_allclose(capped, [[2, 2], [30, 10], [0, 0]])
    np.testing.assert_array_equal(cap_lengths(counts, None).toarray(), counts.toarray())
