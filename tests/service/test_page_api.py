"""The web page's routes through TestClient: the page and its files, snippets and the code map."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.codes import long_codes_to_words
from service.page_data import long_code_signs, make_snippet, principal_plane, query_words
from training.corpus import Corpus

SECRET = "a-test-key-of-16-chars"


def fill(client: TestClient, corpus: Corpus, n: int = 120, headers: dict[str, str] | None = None) -> None:
    assert client.post("/v1/collections", json={"name": "news"}, headers=headers).status_code == 201
    documents = [
        {"id": corpus.ids[i], "text": corpus.texts[i], "metadata": {"label": corpus.labels[i], "i": i}}
        for i in range(0, len(corpus.ids), len(corpus.ids) // n)
    ]
    response = client.post("/v1/collections/news/documents", json={"documents": documents}, headers=headers)
    assert response.status_code == 200, response.text


def test_the_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/main.js">' in page.text
    for name in ("main.js", "api.js", "search.js", "codemap.js", "draw.js", "images.js", "app.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert len(response.content) > 200
    # Everything the page loads is local: no CDN, so it works offline.
    assert "https://" not in page.text and "http://" not in page.text
    assert client.get("/static/nothing.js").status_code == 404


def test_snippets_keep_the_order_asked_and_centre_on_a_query_word(
    client: TestClient, topic_corpus: Corpus
) -> None:
    fill(client, topic_corpus)
    hits = client.post("/v1/collections/news/search", json={"text": "hockey3 hockey7", "limit": 5}).json()
    ids = [hit["id"] for hit in hits["data"]] + ["no-such-document"]
    response = client.post("/v1/collections/news/snippets", json={"ids": ids, "query": "hockey7"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [item["id"] for item in answer["data"]] == ids[:-1]
    assert answer["missing"] == ["no-such-document"] and answer["count"] == len(ids) - 1
    for item in answer["data"]:
        document = client.get(f"/v1/collections/news/documents/{item['id']}").json()
        assert item["metadata"] == document["metadata"]
        assert item["long_code"] == document["long_code"]
        assert item["address_code"] == document["address_code"]
        assert item["snippet"].strip(" …") in " ".join(document["text"].split())
        if "hockey7" in document["text"]:
            assert "hockey7" in item["snippet"]


def test_snippet_window() -> None:
    text = "alpha " * 100 + "needle in the\n\n haystack " + "omega " * 100
    snippet = make_snippet(text, query_words("Needle"), chars=80)
    assert snippet.startswith("… ") and snippet.endswith(" …")
    assert "needle in the haystack" in snippet and len(snippet) <= 84
    assert make_snippet("short text", []) == "short text"
    assert make_snippet("x " * 300, ["absent"], chars=40).startswith("x x")
    assert query_words("The the ANSWER, a 42!") == ["answer", "the", "42"]


def test_snippets_validate_their_input(client: TestClient, topic_corpus: Corpus) -> None:
    fill(client, topic_corpus, n=10)
    for body in ({"ids": []}, {"ids": ["a"], "chars": 5}, {"ids": ["a\u0000"]}, {"ids": ["a"], "x": 1}):
        response = client.post("/v1/collections/news/snippets", json=body)
        assert response.status_code == 422, body
    assert client.post("/v1/collections/nope/snippets", json={"ids": ["a"]}).status_code == 404


def test_map_places_a_sample_by_the_principal_plane_of_long_codes(
    client: TestClient, topic_corpus: Corpus
) -> None:
    fill(client, topic_corpus)
    answer = client.get("/v1/collections/news/map", params={"sample": 50}).json()
    assert answer["count"] == 50 and answer["total"] == 120
    assert answer["field"] == "label" and answer["fields"] == ["i", "label"]
    assert len(answer["mean"]) == 64 and np.asarray(answer["components"]).shape == (2, 64)
    ids = [point["id"] for point in answer["data"]]
    assert len(set(ids)) == 50
    # Each point is its document's long code projected as the response says (what the page does for
    # the query), coloured by its label.
    mean, components = np.asarray(answer["mean"]), np.asarray(answer["components"])
    for point in answer["data"][:10]:
        document = client.get(f"/v1/collections/news/documents/{point['id']}").json()
        assert point["value"] == document["metadata"]["label"]
        packed = np.frombuffer(bytes.fromhex(document["long_code"]), np.uint8)[None, :]
        signs = long_code_signs(long_codes_to_words(packed), 64)[0]
        assert np.allclose((signs - mean) @ components.T, [point["x"], point["y"]], atol=2e-3)
    # Documents of one topic lie closer to each other than to other topics' on the map.
    xy = np.array([[p["x"], p["y"]] for p in answer["data"]])
    labels = np.array([p["value"] for p in answer["data"]])
    centres = {label: xy[labels == label].mean(axis=0) for label in set(labels)}
    own = np.mean([np.linalg.norm(xy[i] - centres[labels[i]]) for i in range(len(xy))])
    spread = np.mean([np.linalg.norm(xy[i] - xy.mean(axis=0)) for i in range(len(xy))])
    assert own < spread
    # The same sample every time; another field; no field.
    assert client.get("/v1/collections/news/map", params={"sample": 50}).json() == answer
    numbered = client.get("/v1/collections/news/map", params={"field": "i", "sample": 5}).json()
    assert numbered["field"] == "i" and all(isinstance(p["value"], int) for p in numbered["data"])
    absent = client.get("/v1/collections/news/map", params={"field": "colour", "sample": 5}).json()
    assert absent["field"] == "colour" and all(p["value"] is None for p in absent["data"])


def test_map_of_an_empty_collection_and_bad_input(client: TestClient) -> None:
    assert client.post("/v1/collections", json={"name": "empty"}).status_code == 201
    empty = client.get("/v1/collections/empty/map").json()
    assert empty["count"] == 0 and empty["total"] == 0 and empty["field"] is None
    assert client.get("/v1/collections/empty/map", params={"sample": 0}).status_code == 422
    assert client.get("/v1/collections/empty/map", params={"sample": 10**6}).status_code == 422
    assert client.get("/v1/collections/nope/map").status_code == 404


def test_principal_plane_is_deterministic_in_sign() -> None:
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((40, 16)) < 0.5, -1.0, 1.0).astype(np.float32)
    mean, components = principal_plane(signs)
    mean2, components2 = principal_plane(-signs)
    assert np.allclose(mean, -mean2)
    for row in (*components, *components2):
        assert row[np.abs(row).argmax()] > 0
    assert principal_plane(signs[:1])[1].tolist() == np.zeros((2, 16)).tolist()


@pytest.mark.parametrize("path", ["/v1/collections/news/map", "/v1/collections/news/snippets"])
def test_page_reads_need_the_key_when_reads_do(make_client, topic_corpus: Corpus, path: str) -> None:
    client = make_client(api_key=SECRET, read_requires_key=True)
    fill(client, topic_corpus, n=10, headers={"X-API-Key": SECRET})
    call = (
        (lambda **kw: client.get(path, **kw))
        if path.endswith("map")
        else (lambda **kw: client.post(path, json={"ids": [topic_corpus.ids[0]]}, **kw))
    )
    assert call().status_code == 401
    assert call(headers={"X-API-Key": SECRET}).status_code == 200
    assert client.get("/").status_code == 200  # the page itself is open; it asks for the key


def test_overview_lists_models_and_collections_from_memory(make_client, topic_corpus: Corpus) -> None:
    client = make_client(api_key=SECRET, read_requires_key=True)
    headers = {"X-API-Key": SECRET}
    fill(client, topic_corpus, n=10, headers=headers)
    assert client.get("/v1/overview").status_code == 401
    overview = client.get("/v1/overview", headers=headers).json()
    listed = client.get("/v1/collections", headers=headers).json()["data"]
    assert overview["models"] == {
        m["kind"]: m["bundle_id"] for m in client.get("/v1/models", headers=headers).json()["data"]
    }
    assert overview["collections"] == [
        {"name": c["name"], "bundle_id": c["bundle_id"], "document_count": c["document_count"]}
        for c in listed
    ]
    assert overview["collections"][0]["document_count"] == 10


def test_page_files_revalidate_by_etag(client: TestClient) -> None:
    first = client.get("/static/main.js")
    assert first.headers["content-type"].startswith("text/javascript")
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/static/main.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/static/..%2Fpage_data.py").status_code == 404
