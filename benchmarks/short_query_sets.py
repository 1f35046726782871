"""Short-query sets of 20 Newsgroups messages for benchmarks/short_queries.py, and their scoring.

* `subject_query`: the Subject: line of the header block, "Re:"-style prefixes stripped; 3+ words.
* `first_sentence_query`: the first sentence the author wrote in the body (quoted lines and "In article
  ... writes:" attributions skipped, wrapped lines joined), cut at 25 words; 3+ words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from training.corpus import Corpus, split_by_id

MIN_WORDS, MAX_SENTENCE_WORDS = 3, 25
VALIDATION_SHARE = 0.1

_RE_PREFIX = re.compile(r"^\s*((re|fwd?|aw)\s*(\^\d+|\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]", re.UNICODE)
_ATTRIBUTION = re.compile(
    r"(^in article|writes:\s*$|wrote:\s*$|^[^\w\s]{0,3}[>|:]|^-{2,}|^\S+@\S+\s*\()", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def _words(text: str) -> list[str]:
    return [token for token in text.split() if _WORD.search(token)]


def split_message(text: str) -> tuple[str, str]:
    """(header block, body) of a raw newsgroup message."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    return head, body


def subject_query(text: str) -> str | None:
    """The Subject: line with its "Re:" prefixes stripped, or None when it has fewer than 3 words."""
    head, _ = split_message(text)
    for line in head.split("\n"):
        if line.lower().startswith("subject:"):
            subject = _RE_PREFIX.sub("", line[len("subject:") :]).strip()
            return subject if len(_words(subject)) >= MIN_WORDS else None
    return None


def first_sentence_query(text: str) -> str | None:
    """The body's first sentence of its own (quotes and attributions skipped), cut at 25 words; None
    when it has fewer than 3 words."""
    _, body = split_message(text)
    paragraph: list[str] = []
    for line in body.split("\n"):
        stripped = line.strip()
        if not stripped or _ATTRIBUTION.search(stripped):
            if paragraph:
                break
            continue
        paragraph.append(stripped)
    sentence = _SENTENCE_END.split(" ".join(paragraph), maxsplit=1)[0] if paragraph else ""
    words = sentence.split()[:MAX_SENTENCE_WORDS]
    return " ".join(words) if len(_words(" ".join(words))) >= MIN_WORDS else None


def draw_queries(
    corpus: Corpus, extract: Callable[[str], str | None], count: int, seed: int
) -> tuple[list[str], list[str]]:
    """`count` (query, label) pairs drawn at random from the documents that give a query."""
    assert corpus.labels is not None, "20 Newsgroups is labelled"
    found = [
        (query, label)
        for text, label in zip(corpus.texts, corpus.labels, strict=True)
        if (query := extract(text)) is not None
    ]
    rows = np.random.default_rng(seed).permutation(len(found))[:count]
    return [found[i][0] for i in rows], [found[i][1] for i in rows]


def validation_split(train: Corpus) -> tuple[Corpus, Corpus]:
    """(indexed, held out): VALIDATION_SHARE of the training documents by id hash (as `semhash evaluate
    text --test-fraction` splits)."""
    return split_by_id(train, VALIDATION_SHARE)


def precision(ranked: Sequence[Sequence[str]], labels: Sequence[str], k: int) -> tuple[float, float]:
    """(P@k with empty slots as misses, precision over the slots that hold a result)."""
    relevant = [sum(hit == label for hit in hits[:k]) for hits, label in zip(ranked, labels, strict=True)]
    returned = sum(min(len(hits), k) for hits in ranked)
    return float(np.mean(relevant) / k), (sum(relevant) / returned if returned else 0.0)
