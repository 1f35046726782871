"""Short samples of documents, the inputs the query encoder learns from, and its vocabulary.

A document gives three kinds of short text, the kinds people type:

* a subject line: the "Subject:" header of a mail or news post, "Re:" prefixes stripped;
* a sentence of its body (headers left out), at most `max_words` words of it;
* a random subset of k ~ U{min_words..max_words} of its distinct words, drawn without replacement
  with probability proportional to tf_i * idf_i (the words that characterise it, as a searcher
  would pick them), not to tf alone (which would draw "writes", "article", "lines").

The query vocabulary is the `size` non-stop words of highest document frequency over the training
documents (ties: alphabetical), so rare but topical words ("clipper") that the document encoders'
2000-word vocabulary drops are inputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from bundles.text_features import TOKEN_PATTERN, WordIndex, count_matrix, smooth_idf

_HEADER = re.compile(r"^[A-Za-z][A-Za-z0-9-]*: ")
_REPLY = re.compile(r"^\s*((re|fwd?|aw)(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*[>|*-])")


def split_headers(text: str) -> tuple[list[str], str]:
    """(header lines, body) of a mail-like text: leading "Name: value" lines up to the first blank line.
    A text that does not start with a header line is all body."""
    lines = text.split("\n")
    if not lines or not _HEADER.match(lines[0]):
        return [], text
    for number, line in enumerate(lines):
        if not line.strip():
            return lines[:number], "\n".join(lines[number + 1 :])
    return lines, ""


def subject_line(text: str) -> str | None:
    """The "Subject:" header with "Re:" / "Fwd:" prefixes stripped; None when there is none or it is empty."""
    for line in split_headers(text)[0]:
        if line.lower().startswith("subject:"):
            subject = _REPLY.sub("", line[len("subject:") :]).strip()
            return subject or None
    return None


def body_sentences(text: str) -> list[str]:
    """The body's sentences (split at . ! ? followed by space, blank lines and quoted-line starts)."""
    body = split_headers(text)[1]
    return [part.strip() for part in _SENTENCE_END.split(body) if part and part.strip()]


def fit_query_vocabulary(texts: Sequence[str], size: int) -> tuple[list[str], np.ndarray]:
    """The `size` non-stop words of highest document frequency (ties alphabetical), in that order of
    columns sorted alphabetically, and their smooth idf (see `bundles.text_features.smooth_idf`)."""
    from sklearn.feature_extraction.text import CountVectorizer  # training-time only

    vectorizer = CountVectorizer(
        lowercase=True, token_pattern=TOKEN_PATTERN, stop_words="english", binary=True
    )
    presence = vectorizer.fit_transform(texts)
    words = vectorizer.get_feature_names_out()  # alphabetical
    frequency = np.asarray(presence.sum(axis=0)).ravel()
    # stable sort on -df keeps alphabetical order among ties
    keep = np.sort(np.argsort(-frequency, kind="stable")[:size])
    return [str(words[i]) for i in keep], smooth_idf(presence[:, keep])


@dataclass
class DocumentWords:
    """What the sampler needs of every document, as columns of the query vocabulary."""

    columns: list[np.ndarray]  # distinct word columns of each document
    weights: list[np.ndarray]  # their tf * idf, the sampling weights
    sentences: list[list[np.ndarray]]  # the word columns of each body sentence with >= min_words words
    subjects: list[np.ndarray | None]  # the word columns of the subject line (None: none, or no word)


def document_words(texts: Sequence[str], index: WordIndex, idf: np.ndarray, min_words: int) -> DocumentWords:
    """Pre-tokenise `texts` for `ShortSampler`."""
    counts = count_matrix(texts, index)
    columns, weights, sentences, subjects = [], [], [], []
    for row, text in enumerate(texts):
        start, end = counts.indptr[row], counts.indptr[row + 1]
        columns.append(counts.indices[start:end].copy())
        weights.append(counts.data[start:end] * idf[counts.indices[start:end]])
        kept = []
        for sentence in body_sentences(text):
            tokens = np.array([c for c in index.token_columns(sentence) if c >= 0], dtype=np.int64)
            if len(tokens) >= min_words:
                kept.append(tokens)
        sentences.append(kept)
        subject = subject_line(text)
        tokens = np.array([c for c in index.token_columns(subject or "") if c >= 0], dtype=np.int64)
        subjects.append(tokens if len(tokens) else None)
    return DocumentWords(columns, weights, sentences, subjects)


@dataclass(frozen=True)
class SampleMix:
    """How often each kind of sample is drawn (a kind a document lacks falls back to word subsets)."""

    words: float = 0.6
    sentence: float = 0.2
    subject: float = 0.2
    min_words: int = 2
    max_words: int = 12


class ShortSampler:
    """Draws short samples of documents as a (n, Q) count matrix over the query vocabulary."""

    def __init__(self, words: DocumentWords, vocab_size: int, mix: SampleMix):
        self.words, self.vocab_size, self.mix = words, vocab_size, mix
        total = mix.words + mix.sentence + mix.subject
        if total <= 0 or min(mix.words, mix.sentence, mix.subject) < 0:
            raise ValueError(f"sample mix weights must be >= 0 and not all 0, got {mix}")
        if not 1 <= mix.min_words <= mix.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {mix.min_words}, {mix.max_words}")
        self.cumulative = np.cumsum([mix.words, mix.sentence, mix.subject]) / total

    def sample(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[sp.csr_matrix, np.ndarray]:
        """One short sample of each document in `rows`: (counts (n, Q), kinds (n,) 0 words 1 sentence
        2 subject)."""
        mix, words = self.mix, self.words
        kinds = np.searchsorted(self.cumulative, rng.random(len(rows)), side="right")
        samples, used = [], np.zeros(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):
            kind, chosen = int(kinds[i]), None
            if kind == 2 and words.subjects[row] is not None:
                chosen = words.subjects[row]
            elif kind == 1 and words.sentences[row]:
                sentence = words.sentences[row][rng.integers(len(words.sentences[row]))]
                start = int(rng.integers(max(1, len(sentence) - mix.max_words + 1)))
                chosen = sentence[start : start + mix.max_words]
            else:
                kind = 0
                columns, weights = words.columns[row], words.weights[row]
                k = min(len(columns), int(rng.integers(mix.min_words, mix.max_words + 1)))
                chosen = (
                    rng.choice(columns, size=k, replace=False, p=weights / weights.sum()) if k else columns
                )
            samples.append(chosen)
            used[i] = kind
        lengths = np.array([len(s) for s in samples], dtype=np.int64)
        flat = np.concatenate(samples) if samples else np.zeros(0, dtype=np.int64)
        matrix = sp.csr_matrix(
            (np.ones(len(flat), dtype=np.float32), (np.repeat(np.arange(len(rows)), lengths), flat)),
            shape=(len(rows), self.vocab_size),
        )
        matrix.sum_duplicates()
        return matrix, used
