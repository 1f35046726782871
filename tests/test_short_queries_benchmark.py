"""The short-query benchmark's query extraction and scoring (benchmarks/short_queries.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from short_query_sets import draw_queries, first_sentence_query, precision, subject_query  # noqa: E402

from training.corpus import Corpus  # noqa: E402

MESSAGE = (
    "From: someone@example.edu (Some One)\n"
    "Subject: Re: RE: Clipper chip and the NSA\n"
    "Organization: Example\n"
    "Lines: 9\n"
    "\n"
    "In article <1993Apr5.1@example.edu>, other@example.edu writes:\n"
    "> The key escrow agencies will hold the keys.\n"
    ">> Quoted twice.\n"
    "\n"
    "I doubt the escrow\nagents are independent. Who appoints them? Nobody says.\n"
)


def test_subject_line_without_reply_prefixes() -> None:
    assert subject_query(MESSAGE) == "Clipper chip and the NSA"


@pytest.mark.parametrize(
    "subject", ["Subject: Re: two words", "Subject: Re: ???", "Subject:", "Organization: no subject here"]
)
def test_subjects_under_three_words_give_no_query(subject: str) -> None:
    assert subject_query(f"From: a@b.c\n{subject}\n\nbody text here\n") is None


def test_subject_is_read_from_the_header_block_only() -> None:
    assert subject_query("From: a@b.c\n\nSubject: a quoted subject line in the body\n") is None


def test_first_sentence_skips_attributions_and_quotes_and_joins_wrapped_lines() -> None:
    assert first_sentence_query(MESSAGE) == "I doubt the escrow agents are independent."


def test_first_sentence_is_cut_at_25_words() -> None:
    body = " ".join(f"word{i}" for i in range(40))
    assert first_sentence_query(f"Subject: x\n\n{body}\n") == " ".join(f"word{i}" for i in range(25))


def test_short_first_sentence_gives_no_query() -> None:
    assert first_sentence_query("Subject: x\n\nThanks!\n\nA longer second paragraph here.\n") is None


def test_draw_queries_is_seeded_and_keeps_labels() -> None:
    texts = [f"Subject: Re: topic number {i}\n\nbody\n" for i in range(50)] + ["Subject: hi\n\nbody\n"]
    corpus = Corpus([str(i) for i in range(51)], texts, [f"g{i % 3}" for i in range(51)])
    queries, labels = draw_queries(corpus, subject_query, 10, seed=3)
    assert (queries, labels) == draw_queries(corpus, subject_query, 10, seed=3)
    assert len(set(queries)) == 10 and "hi" not in queries
    assert all(
        label == f"g{int(query.split()[-1]) % 3}" for query, label in zip(queries, labels, strict=True)
    )


def test_precision_counts_empty_slots_as_misses() -> None:
    at_k, of_returned = precision([["a", "a", "b"], []], ["a", "b"], 10)
    assert at_k == pytest.approx((2 / 10 + 0) / 2)
    assert of_returned == pytest.approx(2 / 3)
