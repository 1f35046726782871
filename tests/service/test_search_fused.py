"""Short-query search through the API, on SQLite and PostgreSQL: the fused BM25 + code rerank against an
independent computation, words the encoder never saw, what is refused, the lexical statistics under
writes, and query by example."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp
from fastapi.testclient import TestClient
from sklearn.feature_extraction.text import CountVectorizer

from bundles.text_features import TOKEN_PATTERN
from service.codes import long_codes_to_words
from service.index import BitIndex
from service.index_sync import CollectionIndex
from service.lexical import LexicalIndex
from service.search import SearchOptions, SearchQuery, search
from training.corpus import Corpus
from training.text_baselines import bm25_database

RARE = {3: "clipper chip", 70: "clipper", 150: "zamboni"}  # words outside the bundle's vocabulary


def _texts(corpus: Corpus) -> list[str]:
    return [f"{text} {RARE.get(i, '')}".strip() for i, text in enumerate(corpus.texts)]


def _fill(client: TestClient, corpus: Corpus) -> list[str]:
    assert client.post("/v1/collections", json={"name": "news"}).status_code == 201
    texts = _texts(corpus)
    documents = [{"id": corpus.ids[i], "text": texts[i]} for i in range(len(texts))]
    response = client.post("/v1/collections/news/documents", json={"documents": documents})
    assert response.status_code == 200, response.text
    return texts


def _search(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/collections/news/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_fused_ranking_is_normalised_bm25_plus_weighted_code_similarity() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)] + ["clipper", "zamboni"]
    texts = [" ".join(rng.choice(words, int(rng.integers(3, 30)))) for _ in range(150)]
    codes = rng.integers(0, 256, (150, 8), dtype=np.uint8)
    index = BitIndex.build(
        4,
        np.arange(150) + 1000,
        [f"d{i}" for i in range(150)],
        rng.integers(0, 16, 150),
        long_codes_to_words(codes),
    )
    entry = CollectionIndex(
        1, "c", "b", "f", 4, 64, 0, index, LexicalIndex.build(list(range(1000, 1150)), texts)
    )
    # Independent references: the baseline's BM25 over every document, numpy popcounts.
    vectorizer = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words="english", dtype=np.float32)
    weights = bm25_database(sp.csr_matrix(vectorizer.fit_transform(texts)))
    for query, weight in [("w3 w7 clipper", 0.5), ("w1 w4 zamboni zamboni", 2.0)]:
        query_code = rng.integers(0, 256, (1, 8), dtype=np.uint8)
        query_words = long_codes_to_words(query_code)[0]
        bm25 = np.asarray(weights @ vectorizer.transform([query]).T.todense()).ravel()
        similarity = 1 - np.unpackbits(codes ^ query_code, axis=1).sum(axis=1) / 64
        expected = bm25 / bm25.max() + weight * similarity
        # Radius 4 of a 4-bit address: every document is a candidate.
        options = SearchOptions(radius=4, limit=150, shortlist_size=150, rerank="fused", code_weight=weight)
        outcome = search(
            entry, SearchQuery(address=3, long_words=query_words, text=query), options, None, None
        )
        order = [int(hit.external_id[1:]) for hit in outcome.hits]
        assert sorted(order) == list(range(150)) and outcome.shortlist_size == 150
        np.testing.assert_allclose([hit.score for hit in outcome.hits], expected[order], rtol=1e-5, atol=1e-6)
        assert (np.diff(expected[order]) <= 1e-9).all()
        bm25_options = replace(options, rerank="bm25", limit=5)
        top = [
            int(hit.external_id[1:])
            for hit in search(entry, SearchQuery(3, query_words, query), bm25_options, None, None).hits
        ]
        np.testing.assert_allclose(bm25[top], np.sort(bm25)[::-1][:5], rtol=1e-5)


def test_a_rare_word_the_encoder_never_saw_finds_its_documents(
    client: TestClient, topic_corpus: Corpus
) -> None:
    _fill(client, topic_corpus)
    # "clipper" is no word of the bundle's vocabulary: no code, but the lexical side knows it.
    found = _search(client, text="Clipper!", limit=10)
    assert found["address"] is None and found["rerank"] == "fused"
    assert {hit["id"] for hit in found["data"]} == {topic_corpus.ids[3], topic_corpus.ids[70]}
    assert all(hit["distance"] is None for hit in found["data"])
    assert found["touched"] == 2 and found["lexical_size"] == 2
    # With topic words too, the document holding both the rare word and the topic comes first.
    mixed = _search(client, text="clipper chip " + topic_corpus.texts[5][:60], limit=5)
    assert mixed["data"][0]["id"] == topic_corpus.ids[3]
    # Words nobody has: nothing found, not refused.
    assert _search(client, text="qqqq zzzz")["count"] == 0
    # Nothing to search for at all, or no code for a code-only rerank: refused, naming the field.
    for body in ({"text": "the of and"}, {"text": "zamboni", "rerank": "hamming"}):
        response = client.post("/v1/collections/news/search", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "text"]


def test_lexical_candidates_are_counted_and_can_be_switched_off(
    client: TestClient, topic_corpus: Corpus
) -> None:
    _fill(client, topic_corpus)
    query = topic_corpus.texts[150][:40] + " zamboni"
    with_lexical = _search(client, text=query, radius=0, shortlist=1, limit=1)
    assert with_lexical["data"][0]["id"] == topic_corpus.ids[150]
    assert with_lexical["touched"] >= with_lexical["shortlist_size"] + 1
    without = _search(client, text=query, radius=0, shortlist=1, limit=1, lexical_candidates=0)
    assert without["lexical_size"] == 0 and without["touched"] == without["shortlist_size"]


def test_lexical_statistics_follow_upserts_replacements_and_deletes(
    client: TestClient, topic_corpus: Corpus
) -> None:
    texts = _fill(client, topic_corpus)
    live = dict(zip(topic_corpus.ids, texts, strict=True))
    replaced = {topic_corpus.ids[i]: "zamboni clipper " + topic_corpus.texts[i + 1] for i in range(0, 40, 4)}
    documents = [{"id": key, "text": text} for key, text in replaced.items()]
    assert client.post("/v1/collections/news/documents", json={"documents": documents}).status_code == 200
    live.update(replaced)
    for gone in topic_corpus.ids[100:130]:
        assert client.delete(f"/v1/collections/news/documents/{gone}").status_code == 204
        live.pop(gone)
    lexical = client.app.state.index_registry.get("news").lexical
    fresh = LexicalIndex.build(list(range(len(live))), list(live.values()))
    assert len(lexical) == len(fresh) == 210
    for term in ("zamboni", "clipper", "chip", "space3", "hockey0"):
        assert lexical.document_frequency(term) == fresh.document_frequency(term)
    assert abs(lexical.average_length - fresh.average_length) < 1e-9
    found = _search(client, text="zamboni", limit=100)
    assert {hit["id"] for hit in found["data"]} == set(replaced) | {topic_corpus.ids[150]}


def test_query_by_example_uses_the_stored_codes_and_leaves_the_document_out(
    client: TestClient, topic_corpus: Corpus
) -> None:
    _fill(client, topic_corpus)
    example = topic_corpus.ids[200]
    stored = client.get(f"/v1/collections/news/documents/{example}").json()
    similar = _search(client, document_id=example, radius=2, limit=20)
    by_code = _search(
        client, code=stored["address_code"], long_code=stored["long_code"], radius=2, limit=21, shortlist=101
    )
    assert similar["rerank"] == "hamming" and example not in {hit["id"] for hit in similar["data"]}
    assert similar["data"] == [hit for hit in by_code["data"] if hit["id"] != example][:20]
    labels = dict(zip(topic_corpus.ids, topic_corpus.labels or [], strict=True))
    assert sum(labels[hit["id"]] == labels[example] for hit in similar["data"]) >= 18
    fused = _search(client, document_id=example, rerank="fused", limit=5)
    assert fused["rerank"] == "fused" and example not in {hit["id"] for hit in fused["data"]}
    missing = client.post("/v1/collections/news/search", json={"document_id": "nope"})
    assert missing.status_code == 404
    both = client.post("/v1/collections/news/search", json={"document_id": example, "text": "x"})
    assert both.status_code == 422
