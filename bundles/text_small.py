"""The first encoder layer of a few documents with numpy alone: the API's single-document writes.

For a handful of documents, `TextBundle._code_input`'s scipy path is mostly fixed costs: building
the count matrix, copying it for a dtype check, capping its lengths with a diagonal matrix product,
the sparse-dense product (~0.4 ms for one 30-word document with two encoders, against ~0.05 ms here).
This module computes the same numbers from the documents' vocabulary columns:

    h_i = sum over the words w of document i of  (count_iw * s_i) W[w]  + t_i c,

with s_i = min(1, max_document_length / N_i) (N_i = sum_w count_iw) and t_i = sum_w count_iw s_i when
the bundle scales the input bias (else 1). Float32 sums depend on their order, so the terms are added
in the order the scipy path adds them, one word after another: the columns in ascending order, or in
descending order when lengths are capped (the rows of the capped matrix come out of scipy's sparse
product reversed, and the sparse-dense product then walks them as stored). `tests/test_text_small.py`
checks that both paths give bit-identical activations, so a document's codes do not depend on which
path encoded it (the bulk job keeps scipy: its batches are large, where scipy's costs are per word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bundles.text_features import WordIndex

# Documents whose gathered weight rows would exceed this many floats take the scipy path.
MAX_GATHERED_FLOATS = 1 << 20


@dataclass(frozen=True)
class CountRows:
    """What `count_matrix` computes, as its CSR arrays: row i's words are columns[indptr[i]:indptr[i+1]],
    ascending, each with its count."""

    indptr: np.ndarray  # (n + 1,) int64
    columns: np.ndarray  # (nnz,) int64
    counts: np.ndarray  # (nnz,) float32

    @classmethod
    def of_texts(cls, texts: Sequence[str], index: WordIndex) -> CountRows:
        keys = [
            row * index.size + column
            for row, text in enumerate(texts)
            for column in index.token_columns(text)
            if column >= 0
        ]
        unique, counts = np.unique(np.array(keys, dtype=np.int64), return_counts=True)
        rows = unique // index.size
        indptr = np.searchsorted(rows, np.arange(len(texts) + 1)).astype(np.int64)
        return cls(indptr, unique % index.size, counts.astype(np.float32))

    @property
    def lengths(self) -> np.ndarray:
        """(n,) float32 words per row, summed as scipy sums a CSR row (zero for an empty row)."""
        lengths = np.zeros(len(self.indptr) - 1, dtype=np.float32)
        nonempty = np.flatnonzero(np.diff(self.indptr))
        if nonempty.size:
            lengths[nonempty] = np.add.reduceat(self.counts, self.indptr[nonempty])
        return lengths


def capped(rows: CountRows, max_length: float | None) -> CountRows:
    """The rows scaled to at most `max_length` words (`bundles.text_features.cap_lengths`), each row's
    words in the order scipy's capped matrix holds them (descending columns; as they are without a cap)."""
    if max_length is None:
        return rows
    lengths = rows.lengths
    scale = np.minimum(1.0, max_length / np.maximum(lengths, 1e-12)).astype(np.float32)
    sizes = np.diff(rows.indptr)
    # Position k of row [start, stop) takes the word at start + stop - 1 - k.
    order = np.repeat(rows.indptr[:-1] + rows.indptr[1:] - 1, sizes) - np.arange(len(rows.columns))
    counts = rows.counts[order] * np.repeat(scale, sizes)
    return CountRows(rows.indptr, rows.columns[order], counts)


def first_layer(rows: CountRows, weight: np.ndarray, bias: np.ndarray, scale_bias: bool) -> np.ndarray:
    """(n, hidden) float32 h = counts W + t c for already capped rows (see the module docstring)."""
    n = len(rows.indptr) - 1
    terms = weight[rows.columns] * rows.counts[:, np.newaxis]
    h = np.zeros((n, weight.shape[1]), dtype=np.float32)
    for row in range(n):
        start, stop = rows.indptr[row], rows.indptr[row + 1]
        if start < stop:
            # A reduce along axis 0 adds the terms one after another (np.add.reduceat does not).
            h[row] = np.add.reduce(terms[start:stop], axis=0)
    scale = rows.lengths[:, np.newaxis] if scale_bias else 1.0
    h += scale * bias
    return h


def fits(rows: CountRows, hidden: int) -> bool:
    """Whether these rows are few enough for this path."""
    return len(rows.columns) * hidden <= MAX_GATHERED_FLOATS
