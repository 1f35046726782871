"""What the API promises at its edges (issue 9, item 7 and 8): the OpenAPI document states the configured
maxima, CORS answers only the configured origins, and the raw address lookup says when it cut results."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from training.corpus import Corpus


def test_openapi_states_the_configured_radius_limit_and_shortlist_maxima(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_radius=3, max_limit=500)
    document = client.get("/openapi.json").json()
    search = document["components"]["schemas"]["SearchRequest"]["properties"]
    assert search["limit"]["maximum"] == 500
    assert {"type": "integer", "minimum": 0, "maximum": 3} in search["radius"]["anyOf"]
    assert {"type": "integer", "minimum": 1, "maximum": 500} in search["shortlist"]["anyOf"]
    lookup = document["paths"]["/v1/collections/{name}/addresses/{address}"]["get"]
    maxima = {p["name"]: p["schema"].get("maximum") for p in lookup["parameters"] if p["in"] == "query"}
    assert maxima == {"radius": 3, "limit": 500}
    # and the server holds to them
    client.post("/v1/collections", json={"name": "c"})
    response = client.get("/v1/collections/c/addresses/0", params={"radius": 4})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "radius"]


def test_cors_answers_only_the_configured_origins(make_client: Callable[..., TestClient]) -> None:
    allowed, other = "https://app.example.org", "https://evil.example.com"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    closed = make_client()
    response = closed.options("/v1/hash", headers={"Origin": allowed, **preflight})
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in closed.get("/healthz", headers={"Origin": allowed}).headers
    client = make_client(cors_origins=[allowed])
    response = client.options("/v1/hash", headers={"Origin": allowed, **preflight})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == allowed
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()
    response = client.post("/v1/hash", json={"text": ""}, headers={"Origin": allowed})
    assert response.status_code == 422 and response.headers["access-control-allow-origin"] == allowed
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
    response = client.options("/v1/hash", headers={"Origin": other, **preflight})
    assert response.status_code == 400 and "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": other}).headers


def test_the_address_lookup_says_when_it_cut_the_results(client: TestClient, topic_corpus: Corpus) -> None:
    client.post("/v1/collections", json={"name": "news"})
    documents = [{"id": i, "text": t} for i, t in zip(topic_corpus.ids, topic_corpus.texts, strict=True)]
    assert client.post("/v1/collections/news/documents", json={"documents": documents}).status_code == 200
    address = client.post("/v1/hash", json={"text": topic_corpus.texts[0]}).json()["data"][0]["address"]
    everything = client.get(f"/v1/collections/news/addresses/{address}", params={"radius": 3, "limit": 1000})
    whole = everything.json()
    assert whole["truncated"] is False and whole["count"] == len(whole["data"]) > 2
    distances = [match["distance"] for match in whole["data"]]
    assert distances == sorted(distances)
    for limit in (whole["count"] - 1, 1):
        cut = client.get(
            f"/v1/collections/news/addresses/{address}", params={"radius": 3, "limit": limit}
        ).json()
        assert cut["truncated"] is True and cut["data"] == whole["data"][:limit]
    exact = client.get(
        f"/v1/collections/news/addresses/{address}", params={"radius": 3, "limit": whole["count"]}
    ).json()
    assert exact["truncated"] is False and exact["data"] == whole["data"]
