"""Short text queries through the API with a bundle that has a query encoder: which encoder codes them,
multi-probe candidates in likelihood order under a budget, the defaults, what is refused, and
`run_search` (what benchmarks call) answering as the route does."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bundles.probes import probe_addresses
from bundles.text import TextBundle
from service.schemas import DEFAULT_PROBES, MAX_PROBES, SearchRequest
from service.search_request import run_search
from training.corpus import Corpus
from training.query_train import train_query_encoder

SHORT = "space3 space7 space11"


@pytest.fixture(scope="session")
def query_models_dir(
    models_dir: Path, topic_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny test bundle plus a tiny query encoder really trained on `topic_corpus`."""
    root = tmp_path_factory.mktemp("query_models")
    shutil.copytree(models_dir / "text", root / "text", ignore=shutil.ignore_patterns("checkpoints"))
    train_query_encoder(TextBundle.load(root / "text"), topic_corpus, "tiny", seed=0)
    return root


@pytest.fixture
def query_bundle(query_models_dir: Path) -> TextBundle:
    return TextBundle.load(query_models_dir / "text")


@pytest.fixture
def query_client(
    make_client: Callable[..., TestClient], query_models_dir: Path, topic_corpus: Corpus
) -> TestClient:
    client = make_client(models_dir=query_models_dir)
    assert client.post("/v1/collections", json={"name": "news"}).status_code == 201
    texts = [*topic_corpus.texts[:-1], topic_corpus.texts[-1] + " zamboni"]
    documents = [{"id": i, "text": t} for i, t in zip(topic_corpus.ids, texts, strict=True)]
    response = client.post("/v1/collections/news/documents", json={"documents": documents})
    assert response.status_code == 200, response.text
    return client


def _search(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/collections/news/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_short_text_is_coded_by_the_query_encoder_and_probed_by_likelihood(
    query_client: TestClient, query_bundle: TextBundle, topic_corpus: Corpus
) -> None:
    assert query_bundle.has_query_encoder and query_bundle.query_is_short(SHORT)
    everything = len(topic_corpus.texts)
    for budget in (1, 5, 40):
        found = _search(
            query_client, text=SHORT, probes=budget, rerank="hamming", limit=everything, shortlist=everything
        )
        assert found["encoder"] == "query"
        probabilities = query_bundle.encode_query([SHORT], encoder="query")
        assert found["address"] == int(probabilities.addresses()[0])
        # Independent reference: the documents stored at the first `probed` most likely addresses.
        probed = found["probed"]
        assert 1 <= probed <= budget
        addresses = set(probe_addresses(probabilities.address[0], probed).tolist())
        stored = query_bundle.encode(topic_corpus.texts).addresses
        expected = {topic_corpus.ids[i] for i in range(everything) if int(stored[i]) in addresses}
        assert {hit["id"] for hit in found["data"]} == expected
        assert found["shortlist_size"] == len(expected) == found["count"]
        # ... ranked by the long-code similarity of the query encoder's most likely long code
        query_bits = probabilities.long[0] > 0.5
        ids = {identifier: i for i, identifier in enumerate(topic_corpus.ids)}
        long_bits = np.unpackbits(query_bundle.encode(topic_corpus.texts).long_codes, axis=1).astype(bool)
        expected_scores = [1 - (long_bits[ids[hit["id"]]] != query_bits).mean() for hit in found["data"]]
        np.testing.assert_allclose([hit["score"] for hit in found["data"]], expected_scores, atol=1e-9)


def test_encoder_on_request_and_by_length(
    query_client: TestClient, query_bundle: TextBundle, topic_corpus: Corpus
) -> None:
    document = _search(query_client, text=SHORT, encoder="document", limit=5)
    assert document["encoder"] == "document"
    assert document["address"] == int(query_bundle.encode([SHORT]).addresses[0])
    long_text = topic_corpus.texts[10]
    assert not query_bundle.query_is_short(long_text)
    assert _search(query_client, text=long_text, limit=5)["encoder"] == "document"
    assert _search(query_client, text=long_text, encoder="query", limit=5)["encoder"] == "query"
    # Codes, addresses and stored documents carry their own codes: no encoder is reported.
    example = _search(query_client, document_id=topic_corpus.ids[0], limit=5)
    assert example["encoder"] is None and example["data"][0]["id"] != topic_corpus.ids[0]


def test_defaults_probe_text_and_keep_a_ball_for_codes(query_client: TestClient) -> None:
    default = _search(query_client, text=SHORT, limit=10)
    assert default["rerank"] == "fused" and default["encoder"] == "query"
    assert 1 <= default["probed"] <= DEFAULT_PROBES and default["count"] == 10
    # A radius asks for the ball instead: 1 + 16 addresses of a 16-bit code at radius 1.
    ball = _search(query_client, text=SHORT, radius=1, rerank="hamming", limit=1, shortlist=240)
    assert ball["probed"] == 17
    by_address = _search(query_client, address=default["address"], limit=240)
    assert by_address["encoder"] is None and by_address["probed"] <= 1 + 16 + 120  # radius 2


def test_words_no_encoder_knows_are_searched_lexically(
    query_client: TestClient, topic_corpus: Corpus
) -> None:
    found = _search(query_client, text="zamboni", limit=10)
    assert found["address"] is None and found["encoder"] is None
    assert [hit["id"] for hit in found["data"]] == [topic_corpus.ids[-1]]
    assert _search(query_client, text="qqqq zzzz")["count"] == 0  # not refused: nothing found


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": SHORT, "radius": 1, "probes": 8}, "not both"),
        ({"address": 3, "probes": 8}, "`probes` needs a `text` query"),
        ({"document_id": "space-0", "encoder": "query"}, "`encoder` applies to `text` queries only"),
        ({"text": SHORT, "probes": MAX_PROBES + 1}, "less than or equal"),
        ({"text": SHORT, "probes": 0}, "greater than or equal"),
        ({"text": SHORT, "encoder": "sentence"}, "'auto', 'query' or 'document'"),
    ],
)
def test_bad_probe_and_encoder_options_are_refused(
    query_client: TestClient, body: dict, message: str
) -> None:
    response = query_client.post("/v1/collections/news/search", json=body)
    assert response.status_code == 422, response.text
    assert message in response.text


def test_run_search_answers_as_the_route_does(query_client: TestClient) -> None:
    state = query_client.app.state  # type: ignore[attr-defined]
    collection = state.index_registry.get("news")
    for body in (
        {"text": SHORT, "limit": 10},
        {"text": "zamboni"},
        {"text": SHORT, "radius": 2, "rerank": "bm25"},
    ):
        direct = run_search(
            SearchRequest(**body), collection, state.text_bundle, state.session_factory, state.settings
        )
        rest = _search(query_client, **body)
        assert direct.model_dump(exclude={"took_ms"}) == {k: v for k, v in rest.items() if k != "took_ms"}
