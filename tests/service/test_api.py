"""The REST API through TestClient with the lifespan running, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from bundles.text import TextBundle
from service import store
from service.db import Collection, Document, make_engine, make_session_factory
from service.indexer import IncomingDocument, write_encoded
from service.main import BundleMissingError, create_app
from service.migrate import DatabaseNotAtHeadError, alembic_config
from service.schemas import DEFAULT_SHORTLIST
from service.settings import Settings
from training.corpus import Corpus


def create_collection(client: TestClient, name: str = "news", **headers: str) -> None:
    response = client.post("/v1/collections", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text


def upsert(client: TestClient, corpus: Corpus, rows: range, name: str = "news") -> None:
    documents = [
        {"id": corpus.ids[i], "text": corpus.texts[i], "metadata": {"label": corpus.labels[i]}} for i in rows
    ]
    response = client.post(f"/v1/collections/{name}/documents", json={"documents": documents})
    assert response.status_code == 200, response.text
    assert response.json() == {"upserted": len(rows)}


def search(client: TestClient, name: str = "news", **body: object) -> dict:
    response = client.post(f"/v1/collections/{name}/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error_locations(response) -> list[list]:
    return [item["loc"] for item in response.json()["detail"]]


def test_hash_one_text_and_a_batch(client: TestClient, text_bundle: TextBundle, topic_corpus: Corpus) -> None:
    one = client.post("/v1/hash", json={"text": topic_corpus.texts[0]}).json()
    batch = client.post("/v1/hash", json={"texts": topic_corpus.texts[:3]}).json()
    assert one["count"] == 1 and batch["count"] == 3
    assert batch["data"][0] == one["data"][0]
    codes = text_bundle.encode(topic_corpus.texts[:3])
    for item, address, long_code in zip(batch["data"], codes.addresses, codes.long_codes, strict=True):
        assert item["address"] == int(address)
        assert item["address_code"] == format(int(address), "016b")
        assert item["long_code"] == long_code.tobytes().hex()
        assert item["bundle_id"] == text_bundle.bundle_id


def test_hash_rejects_text_without_vocabulary_words(client: TestClient, topic_corpus: Corpus) -> None:
    response = client.post("/v1/hash", json={"texts": [topic_corpus.texts[0], "zzz qqq"]})
    assert response.status_code == 422
    assert error_locations(response) == [["body", "texts", 1]]
    assert client.post("/v1/hash", json={}).status_code == 422


def test_collections_lifecycle(client: TestClient, topic_corpus: Corpus, text_bundle: TextBundle) -> None:
    create_collection(client)
    assert client.post("/v1/collections", json={"name": "news"}).status_code == 409
    upsert(client, topic_corpus, range(10))
    listed = client.get("/v1/collections").json()
    assert listed["count"] == 1 and listed["data"][0]["document_count"] == 10
    one = client.get("/v1/collections/news").json()
    assert (one["address_bits"], one["long_bits"], one["bundle_id"]) == (16, 64, text_bundle.bundle_id)
    assert client.delete("/v1/collections/news").status_code == 204
    assert client.get("/v1/collections/news").status_code == 404
    assert client.post("/v1/collections/news/search", json={"address": 1}).status_code == 404


def test_upsert_search_get_replace_delete(client: TestClient, topic_corpus: Corpus) -> None:
    create_collection(client)
    upsert(client, topic_corpus, range(0, 240, 2))
    query_id = topic_corpus.ids[10]
    found = search(client, text=topic_corpus.texts[10], radius=2, limit=500, rerank="hamming")
    by_id = {hit["id"]: hit for hit in found["data"]}
    assert by_id[query_id]["distance"] == 0 and by_id[query_id]["score"] == 1.0
    assert found["rerank"] == "hamming" and found["shortlist_size"] == found["count"]
    assert [hit["score"] for hit in found["data"]] == sorted(
        (hit["score"] for hit in found["data"]), reverse=True
    )
    document = client.get(f"/v1/collections/news/documents/{query_id}").json()
    assert document["text"] == topic_corpus.texts[10] and document["metadata"] == {"label": "space"}
    assert document["address"] == found["address"]
    # Replacing by id keeps one row per id and moves the document to its new text's code.
    replacement = topic_corpus.texts[200]  # a "medicine" text
    response = client.post(
        "/v1/collections/news/documents", json={"documents": [{"id": query_id, "text": replacement}]}
    )
    assert response.status_code == 200
    assert client.get("/v1/collections/news").json()["document_count"] == 120
    moved = search(client, text=replacement, radius=0, limit=500)
    assert query_id in {hit["id"] for hit in moved["data"]}
    assert client.delete(f"/v1/collections/news/documents/{query_id}").status_code == 204
    assert client.get(f"/v1/collections/news/documents/{query_id}").status_code == 404
    assert client.delete(f"/v1/collections/news/documents/{query_id}").status_code == 404
    assert query_id not in {
        hit["id"] for hit in search(client, text=replacement, radius=0, limit=500)["data"]
    }


def test_document_ids_may_hold_slashes_and_other_printable_characters(
    client: TestClient, topic_corpus: Corpus
) -> None:
    create_collection(client)
    ids = ["sci.crypt/15186", "dir/sub/file.txt", "ü ?#%&+ id"]
    documents = [{"id": external_id, "text": topic_corpus.texts[i]} for i, external_id in enumerate(ids)]
    assert client.post("/v1/collections/news/documents", json={"documents": documents}).status_code == 200
    for i, external_id in enumerate(ids):
        url = f"/v1/collections/news/documents/{quote(external_id, safe='/')}"
        fetched = client.get(url)
        assert fetched.status_code == 200 and fetched.json()["id"] == external_id
        assert fetched.json()["text"] == topic_corpus.texts[i]
        assert client.delete(url).status_code == 204 and client.get(url).status_code == 404
    bad = [
        {"id": "tab\tin id", "text": topic_corpus.texts[0]},
        {"id": "x" * 257, "text": topic_corpus.texts[1]},
    ]
    response = client.post("/v1/collections/news/documents", json={"documents": bad})
    assert response.status_code == 422 and error_locations(response) == [
        ["body", "documents", 0, "id"],
        ["body", "documents", 1, "id"],
    ]


def test_search_by_code_address_and_long_code_and_tfidf(client: TestClient, topic_corpus: Corpus) -> None:
    create_collection(client)
    upsert(client, topic_corpus, range(240))
    code = client.post("/v1/hash", json={"text": topic_corpus.texts[70]}).json()["data"][0]
    by_text = search(client, text=topic_corpus.texts[70], radius=1, limit=1000, rerank="hamming")
    by_code = search(client, code=code["address_code"], long_code=code["long_code"], radius=1, limit=1000)
    assert by_code["data"] == by_text["data"]
    by_address = search(client, address=code["address"], radius=1, limit=1000)
    assert by_address["rerank"] == "none"
    assert {hit["id"] for hit in by_address["data"]} == {hit["id"] for hit in by_text["data"]}
    raw = client.get(
        f"/v1/collections/news/addresses/{code['address']}", params={"radius": 1, "limit": 1000}
    ).json()
    assert {item["id"] for item in raw["data"]} == {hit["id"] for hit in by_text["data"]}
    tfidf = search(client, text=topic_corpus.texts[70], radius=1, limit=1000, rerank="tfidf")
    assert tfidf["rerank"] == "tfidf"
    scores = [hit["score"] for hit in tfidf["data"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= score <= 1.0 + 1e-6 for score in scores)
    assert tfidf["data"][0]["id"] == topic_corpus.ids[70]  # a document is most similar to itself


@pytest.mark.parametrize("rerank", ["hamming", "tfidf", "none"])
def test_a_larger_shortlist_returns_the_best_limit_of_it(
    client: TestClient, topic_corpus: Corpus, rerank: str
) -> None:
    create_collection(client)
    upsert(client, topic_corpus, range(240))
    query = {"text": topic_corpus.texts[5], "radius": 2, "rerank": rerank}
    whole = search(client, **query, limit=200)
    best = search(client, **query, limit=7, shortlist=200)
    assert best["shortlist_size"] == whole["shortlist_size"] > 7 and best["count"] == 7
    assert best["data"] == whole["data"][:7]
    # By default the shortlist is DEFAULT_SHORTLIST documents (at least the limit).
    assert search(client, **query, limit=7)["shortlist_size"] == min(
        DEFAULT_SHORTLIST, whole["shortlist_size"]
    )


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"address": 1, "radius": 5}, ["body", "radius"]),
        ({"address": 1, "radius": -1}, ["body", "radius"]),
        ({"address": 1, "limit": 0}, ["body", "limit"]),
        ({"address": 1, "limit": 10_001}, ["body", "limit"]),
        ({"address": 2**16}, ["body", "address"]),
        ({"code": "0101"}, ["body", "code"]),
        ({"code": "01x1"}, ["body", "code"]),
        ({"address": 1, "long_code": "abc"}, ["body", "long_code"]),
        ({"text": "zzz qqq", "rerank": "hamming"}, ["body", "text"]),
        ({"text": "the of and !"}, ["body", "text"]),
        ({"text": ""}, ["body", "text"]),
        ({"address": 1, "limit": 10, "shortlist": 5}, ["body", "shortlist"]),
        ({"address": 1, "shortlist": 10_001}, ["body", "shortlist"]),
        ({"address": 1, "shortlist": 0}, ["body", "shortlist"]),
    ],
)
def test_bad_search_input_is_422_naming_the_field(client: TestClient, body: dict, location: list) -> None:
    create_collection(client)
    response = client.post("/v1/collections/news/search", json=body)
    assert response.status_code == 422, response.text
    assert location in error_locations(response)


def test_tfidf_rerank_needs_text_and_query_needs_exactly_one_input(client: TestClient) -> None:
    create_collection(client)
    for body in ({"address": 1, "rerank": "tfidf"}, {"address": 1, "code": "0" * 16}, {}):
        response = client.post("/v1/collections/news/search", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["msg"]


def test_bad_batches_write_nothing(client: TestClient, topic_corpus: Corpus) -> None:
    create_collection(client)
    duplicate = [{"id": "a", "text": topic_corpus.texts[0]}, {"id": "a", "text": topic_corpus.texts[1]}]
    response = client.post("/v1/collections/news/documents", json={"documents": duplicate})
    assert response.status_code == 422 and error_locations(response) == [["body", "documents", 1, "id"]]
    empty = [{"id": "a", "text": topic_corpus.texts[0]}, {"id": "b", "text": "no such words"}]
    response = client.post("/v1/collections/news/documents", json={"documents": empty})
    assert response.status_code == 422 and error_locations(response) == [["body", "documents", 1, "text"]]
    nul = [
        {"id": "a", "text": topic_corpus.texts[0], "metadata": {"k": ["ok", "bad\x00"]}},
        {"id": "b", "text": "x\x00"},
    ]
    response = client.post("/v1/collections/news/documents", json={"documents": nul})
    assert response.status_code == 422
    assert error_locations(response) == [
        ["body", "documents", 0, "metadata"],
        ["body", "documents", 1, "text"],
    ]
    assert "NUL" in response.json()["detail"][0]["msg"]
    assert client.get("/v1/collections/news").json()["document_count"] == 0
    assert client.get("/v1/collections/news/documents/a").status_code == 404
    assert client.post("/v1/collections/nope/documents", json={"documents": duplicate[:1]}).status_code == 404


def test_writes_show_at_once_in_their_own_process_whoever_else_writes(
    client: TestClient, topic_corpus: Corpus, text_bundle: TextBundle, migrated_url: str
) -> None:
    """A collection another process created (not yet polled here) takes writes at once, and a write
    made right after another process's shows both: the writer reads back what it did not see."""
    other = make_engine(migrated_url)  # stands for another server or the bulk job
    try:
        with make_session_factory(other)() as session:
            collection = store.create_collection(session, "elsewhere", text_bundle)
            session.commit()
        ids = topic_corpus.ids
        upsert(client, topic_corpus, range(0, 3), name="elsewhere")
        found = search(client, "elsewhere", text=topic_corpus.texts[1], radius=0)["data"]
        assert ids[1] in {hit["id"] for hit in found}
        codes = text_bundle.encode([topic_corpus.texts[5]])
        with make_session_factory(other)() as session:
            document = IncomingDocument(ids[5], topic_corpus.texts[5])
            write_encoded(session, collection, [document], codes.addresses, codes.long_codes)
            session.commit()
        assert client.delete(f"/v1/collections/elsewhere/documents/{ids[0]}").status_code == 204
        entry = client.app.state.index_registry.get("elsewhere")
        live = set(entry.index.external_ids_at(entry.index.live_positions()))
        assert live == {ids[1], ids[2], ids[5]} and entry.change_seq == 3
        with other.connect() as connection:
            rows = connection.scalars(
                select(Document.id).where(
                    Document.collection_id == collection.id, Document.deleted.is_(False)
                )
            )
            assert sorted(entry.lexical.rows()) == sorted(rows)
    finally:
        other.dispose()


def test_database_failure_mid_batch_is_503_and_leaves_nothing(
    client: TestClient, topic_corpus: Corpus, migrated_url: str
) -> None:
    create_collection(client)
    engine = client.app.state.engine

    def fail_on_document_insert(_conn, _cursor, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DOCUMENTS"):
            raise OperationalError(statement, {}, Exception("connection lost"))

    event.listen(engine, "before_cursor_execute", fail_on_document_insert)
    try:
        documents = [{"id": f"d{i}", "text": topic_corpus.texts[i]} for i in range(20)]
        response = client.post("/v1/collections/news/documents", json={"documents": documents})
    finally:
        event.remove(engine, "before_cursor_execute", fail_on_document_insert)
    assert response.status_code == 503 and "nothing was written" in response.json()["detail"]
    check = make_engine(migrated_url)
    try:
        with check.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(Document)) == 0
            assert (
                connection.scalar(select(Collection.change_seq)) == 0
            )  # the counter bump was rolled back too
    finally:
        check.dispose()


def test_body_over_the_limit_is_413(make_client: Callable[..., TestClient], topic_corpus: Corpus) -> None:
    client = make_client(max_body_bytes=2048)
    create_collection(client)
    big = {"documents": [{"id": "a", "text": topic_corpus.texts[0] * 20}]}
    assert client.post("/v1/collections/news/documents", json=big).status_code == 413

    def chunks():  # no Content-Length: the limit must hold for streamed bodies too
        yield b'{"documents": [{"id": "a", "text": "'
        for _ in range(100):
            yield b"space1 " * 10
        yield b'"}]}'

    response = client.post(
        "/v1/collections/news/documents", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_api_key_guards_writes_and_optionally_reads(make_client: Callable[..., TestClient]) -> None:
    key = "k" * 32
    client = make_client(api_key=key)
    assert client.post("/v1/collections", json={"name": "news"}).status_code == 401
    assert (
        client.post("/v1/collections", json={"name": "news"}, headers={"X-API-Key": "wrong"}).status_code
        == 401
    )
    create_collection(client, **{"X-API-Key": key})
    assert client.get("/v1/collections").status_code == 200
    assert client.delete("/v1/collections/news").status_code == 401
    guarded = make_client(api_key=key, read_requires_key=True)
    assert guarded.get("/v1/collections").status_code == 401
    assert guarded.get("/v1/collections", headers={"X-API-Key": key}).status_code == 200
    assert guarded.get("/healthz").status_code == 200


def test_health_readiness_metrics_and_models(
    client: TestClient, topic_corpus: Corpus, text_bundle: TextBundle
) -> None:
    create_collection(client)
    upsert(client, topic_corpus, range(5))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    models = client.get("/v1/models").json()
    assert models["count"] == 1 and models["data"][0]["bundle_id"] == text_bundle.bundle_id
    assert models["data"][0]["config"]["address_bits"] == 16
    metrics = client.get("/metrics").text
    assert 'semhash_index_documents{collection="news"} 5.0' in metrics
    assert (
        'semhash_http_requests_total{method="POST",route="/v1/collections/{name}/documents",status="200"}'
        in metrics
    )


def test_server_refuses_a_database_not_at_head(database_url: str, models_dir) -> None:
    app = create_app(Settings(database_url=database_url, models_dir=models_dir))
    with pytest.raises(DatabaseNotAtHeadError, match="run `semhash migrate`"), TestClient(app):
        pass


def test_server_refuses_to_start_without_a_text_bundle(migrated_url: str, tmp_path) -> None:
    app = create_app(Settings(database_url=migrated_url, models_dir=tmp_path))
    with pytest.raises(BundleMissingError, match="semhash train text"), TestClient(app):
        pass


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/hash",
        "/v1/collections",
        "/v1/collections/{name}",
        "/v1/collections/{name}/documents",
        "/v1/collections/{name}/documents/{document_id}",
        "/v1/collections/{name}/search",
        "/v1/collections/{name}/addresses/{address}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/models",
    ):
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_vision_routes_are_served_and_answer_503_without_their_bundles(client: TestClient) -> None:
    response = client.post("/v1/digits/recognize", json={"pixels": [[0.0] * 28] * 28})
    assert response.status_code == 503 and "digits" in response.json()["detail"]
    models = client.get("/v1/models").json()
    assert [model["kind"] for model in models["data"]] == ["text"]


def test_readyz_reports_a_database_that_fell_behind_the_code(client: TestClient, migrated_url: str) -> None:
    client.app.state.engine.dispose()  # release pooled connections so the downgrade can drop the tables
    command.downgrade(alembic_config(migrated_url), "base")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["database_reachable"] is True and body["database_at_head"] is False
    assert "semhash migrate" in body["detail"]
