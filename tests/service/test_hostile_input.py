"""Hostile and malformed requests, on SQLite and PostgreSQL: every one is a 4xx that says what was wrong,
nothing is written, and no id can address another resource (issue 9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.validation import document_id_problem
from training.corpus import Corpus

DOT_SEGMENT_IDS = [".", "..", "a/../b", "a/./b", "../x", "x/..", "/a", "a/", "a//b", "/", "..\\x"]
CONTROL_IDS = ["tab\there", "nul\x00", "del\x7f", "c1\x85", "x" * 257, ""]


def make_collection(client: TestClient, topic_corpus: Corpus, name: str = "c") -> None:
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    documents = [{"id": f"d{i}", "text": topic_corpus.texts[i]} for i in range(3)]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": documents}).status_code == 200


def post_raw(client: TestClient, url: str, body: str | bytes) -> object:
    """A JSON body sent byte for byte (for lone surrogates, NaN and numbers json.dumps would not write)."""
    return client.post(url, content=body, headers={"content-type": "application/json"})


def assert_intact(client: TestClient, name: str = "c", documents: int = 3) -> None:
    response = client.get(f"/v1/collections/{name}")
    assert response.status_code == 200 and response.json()["document_count"] == documents


@pytest.mark.parametrize("bad_id", DOT_SEGMENT_IDS + CONTROL_IDS)
def test_ids_that_could_address_another_resource_or_not_be_stored_are_refused(bad_id: str) -> None:
    assert document_id_problem(bad_id) is not None


@pytest.mark.parametrize(
    "good_id", ["sci.crypt/15186", "dir/sub/file.txt", "ü ?#%&+ id", "a..b", ".hidden/x"]
)
def test_ids_with_slashes_and_dots_inside_segments_stay_valid(good_id: str) -> None:
    assert document_id_problem(good_id) is None


def test_upserts_with_bad_ids_are_422_naming_each_and_write_nothing(
    client: TestClient, topic_corpus: Corpus
) -> None:
    make_collection(client, topic_corpus)
    bad = DOT_SEGMENT_IDS + CONTROL_IDS
    documents = [{"id": bad_id, "text": topic_corpus.texts[10]} for bad_id in bad]
    response = client.post("/v1/collections/c/documents", json={"documents": documents})
    assert response.status_code == 422
    locations = {tuple(item["loc"]) for item in response.json()["detail"]}
    assert locations == {("body", "documents", i, "id") for i in range(len(bad))}
    assert_intact(client)
    # a lone surrogate in an id, which json.dumps cannot write as text
    response = post_raw(
        client, "/v1/collections/c/documents", '{"documents": [{"id": "\\ud800", "text": "x"}]}'
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
        "body",
        "documents",
        0,
        "id",
    ]
    message = response.json()["detail"][0]["msg"]
    assert "surrogate" in message or "unicode" in message
    assert_intact(client)


def test_a_dot_dot_id_never_deletes_the_collection(client: TestClient, topic_corpus: Corpus) -> None:
    make_collection(client, topic_corpus)
    # Such ids cannot be stored, so no client has a reason to send them. What the server receives from
    # one that does not resolve dot segments (curl --path-as-is, percent-encoded dots) is a bad id.
    for path in ("%2E%2E", "%2e", "d0/%2E%2E", "d0%2F..", "%2E/d0", "d0//d1"):
        response = client.delete(f"/v1/collections/c/documents/{path}")
        assert response.status_code == 422, (path, response.status_code)
        assert response.json()["detail"][0]["loc"] == ["path", "document_id"]
        assert client.get(f"/v1/collections/c/documents/{path}").status_code == 422
        assert_intact(client)
    # What a resolving client sends for `c/documents/..` with curl: the collection with a trailing slash.
    # It is another resource, not a redirect to the collection.
    for method in ("DELETE", "GET", "POST"):
        response = client.request(method, "/v1/collections/c/", follow_redirects=False)
        assert response.status_code in (404, 405), (method, response.status_code)
        assert_intact(client)
    assert client.delete("/v1/collections/c/documents/").status_code in (404, 405, 422)
    assert_intact(client)
    assert client.delete("/v1/collections/c/documents/d0").status_code == 204
    assert_intact(client, documents=2)


@pytest.mark.parametrize("name", [".", "..", "-x", "a/b", "é", "x" * 129])
def test_bad_collection_names_are_422(client: TestClient, name: str) -> None:
    response = client.post("/v1/collections", json={"name": name})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "name"]
    assert client.post("/v1/images/collections", json={"name": name}).status_code in (422, 503)


@pytest.mark.parametrize(
    ("url", "body", "location"),
    [
        ("/v1/hash", '{"text": "\\ud800"}', ["body", "text"]),
        ("/v1/hash", '{"texts": ["ok", "a\\udfffb"]}', ["body", "texts", 1]),
        ("/v1/collections/c/search", '{"text": "x\\ud800"}', ["body", "text"]),
        ("/v1/collections/c/search", '{"document_id": "\\ud800"}', ["body", "document_id"]),
        ("/v1/collections/c/search", '{"document_id": ".."}', ["body", "document_id"]),
        ("/v1/collections", '{"name": "c2", "bundle_id": "\\udc80"}', ["body", "bundle_id"]),
        (
            "/v1/collections/c/documents",
            '{"documents": [{"id": "a", "text": "\\ud800"}]}',
            ["body", "documents", 0, "text"],
        ),
    ],
)
def test_lone_surrogates_anywhere_are_422_naming_the_field(
    client: TestClient, topic_corpus: Corpus, url: str, body: str, location: list
) -> None:
    make_collection(client, topic_corpus)
    response = post_raw(client, url, body)
    assert response.status_code == 422, response.text
    assert location in [item["loc"] for item in response.json()["detail"]]
    assert_intact(client)


@pytest.mark.parametrize(
    "metadata",
    [
        '{"x": NaN}',
        '{"x": Infinity}',
        '{"x": -Infinity}',
        '{"x": 1e400}',
        '{"x": [1, {"y": -1e999}]}',
        '{"x": "\\ud800"}',
        '{"\\udc00": 1}',
        '{"x": "nul\\u0000"}',
        "[" * 40 + "]" * 40,
        '{"a": ' + '{"a": ' * 40 + "1" + "}" * 41,
    ],
)
def test_metadata_that_is_not_finite_storable_json_is_422_on_both_backends(
    client: TestClient, topic_corpus: Corpus, metadata: str
) -> None:
    make_collection(client, topic_corpus)
    text = json.dumps(topic_corpus.texts[20])
    body = f'{{"documents": [{{"id": "m", "text": {text}, "metadata": {metadata}}}]}}'
    response = post_raw(client, "/v1/collections/c/documents", body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:4] == ["body", "documents", 0, "metadata"]
    assert_intact(client)
    assert client.get("/v1/collections/c/documents/m").status_code == 404


def test_good_metadata_round_trips_and_timestamps_carry_a_time_zone(
    client: TestClient, topic_corpus: Corpus
) -> None:
    make_collection(client, topic_corpus)
    metadata = {"n": 1.5, "big": 10**30, "nested": {"list": [1, "ü", None, True]}, "emoji": "😀"}
    documents = [{"id": "m/1", "text": topic_corpus.texts[20], "metadata": metadata}]
    assert client.post("/v1/collections/c/documents", json={"documents": documents}).status_code == 200
    document = client.get("/v1/collections/c/documents/m/1").json()
    assert document["metadata"] == metadata
    for stamp in (
        document["created_at"],
        document["updated_at"],
        client.get("/v1/collections/c").json()["created_at"],
    ):
        assert datetime.fromisoformat(stamp).tzinfo is not None, stamp


def _concrete_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every API operation in the OpenAPI document, path parameters filled in."""
    values = {"{name}": "c", "{document_id}": "d0", "{address}": "1"}
    routes = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for placeholder, value in values.items():
            path = path.replace(placeholder, value)
        assert "{" not in path, f"add a value for {path}"
        routes.extend((method.upper(), path) for method in operations)
    return routes


NOT_UTF8 = [b'{"text": "\xff\xfe"}', b'{"text": "caf\xe9"}', b"\xed\xa0\x80", b'{"documents": "\xc3"}']


@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.x+json; charset=utf-8", None])
def test_a_json_body_that_is_not_utf8_is_422_on_every_route(
    client: TestClient, topic_corpus: Corpus, content_type: str | None
) -> None:
    make_collection(client, topic_corpus)
    headers = {} if content_type is None else {"content-type": content_type}
    routes = _concrete_routes(client)
    assert len(routes) > 15
    for method, path in routes:
        for body in NOT_UTF8:
            response = client.request(method, path, content=body, headers=headers)
            assert response.status_code == 422, (method, path, body, response.status_code)
            detail = response.json()["detail"][0]
            assert detail["loc"] == ["body"] and "UTF-8" in detail["msg"], detail
    assert_intact(client)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{"),
        ("application/json", b'{"text": }'),
        ("application/json", b"[" * 100_000),
        ("application/json", b'{"a":' * 50_000),
        ("application/json", b"\xef\xbb\xbf{]"),
        ("text/plain", b"\xff\xfe binary"),
        ("application/octet-stream", b"\x00\x01\x02"),
        ("application/x-www-form-urlencoded", b"text=%ff"),
    ],
)
def test_undecodable_or_foreign_bodies_are_4xx_without_echoing_bytes_on_every_route(
    client: TestClient, topic_corpus: Corpus, content_type: str, body: bytes
) -> None:
    make_collection(client, topic_corpus)
    for method, path in _concrete_routes(client):
        if method == "DELETE":
            continue  # a DELETE reads no body: it would delete what it names
        response = client.request(method, path, content=body, headers={"content-type": content_type})
        unserved = response.status_code == 503 and "model" in response.text
        assert response.status_code < 500 or unserved, (method, path, body[:20], response.status_code)
        if method in ("POST", "PUT", "PATCH") and not path.endswith("/documents/d0"):
            # every JSON route refuses the body: 422 naming it (415 where uploads are also accepted)
            assert response.status_code in (404, 405, 415, 422) or unserved, (
                method,
                path,
                response.status_code,
            )
        assert "\\x" not in response.text and "\\ufffd" not in response.text.lower()
    assert_intact(client)


def test_database_errors_are_classified_not_all_reported_as_an_outage() -> None:
    import sqlite3

    import psycopg.errors
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError

    from service.errors import database_error_kind

    def wrap(cls: type, orig: Exception) -> Exception:
        return cls("INSERT ...", {}, orig)

    assert database_error_kind(wrap(OperationalError, psycopg.errors.AdminShutdown("bye"))) == "unavailable"
    assert database_error_kind(wrap(OperationalError, psycopg.OperationalError("refused"))) == "unavailable"
    assert database_error_kind(wrap(OperationalError, sqlite3.OperationalError("locked"))) == "unavailable"
    assert database_error_kind(wrap(OperationalError, psycopg.errors.SerializationFailure())) == "unavailable"
    assert database_error_kind(wrap(DataError, psycopg.errors.InvalidTextRepresentation("NaN"))) == "invalid"
    assert database_error_kind(wrap(DataError, psycopg.errors.UntranslatableCharacter())) == "invalid"
    assert database_error_kind(wrap(IntegrityError, psycopg.errors.UniqueViolation())) == "conflict"
    assert database_error_kind(wrap(ProgrammingError, psycopg.errors.UndefinedTable())) == "internal"


def test_data_the_database_refuses_is_422_and_writes_nothing(
    client: TestClient, topic_corpus: Corpus
) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import DataError

    make_collection(client, topic_corpus)
    engine = client.app.state.engine

    def refuse(_conn, _cursor, statement: str, *_args: object) -> None:
        if "INSERT INTO DOCUMENTS" in statement.upper():  # on PostgreSQL, after the counter's CTE
            raise DataError(statement, {}, Exception("invalid input syntax for type json\nLINE 1: ..."))

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        documents = [{"id": "x", "text": topic_corpus.texts[30], "metadata": {"a": 1}}]
        response = client.post("/v1/collections/c/documents", json={"documents": documents})
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert response.status_code == 422, response.text
    message = response.json()["detail"][0]["msg"]
    assert "refused" in message and "nothing was written" in message and "\n" not in message
    assert_intact(client)


def test_text_logs_escape_user_input_and_carry_utc_times() -> None:
    import logging

    from service.request_log import TextFormatter

    record = logging.LogRecord("semhash.request", logging.INFO, __file__, 1, "%s %s %d", None, None)
    record.args = ("GET", "/v1/collections/x\n2026-01-01 INFO forged line\r", 404)
    record.request_id = "r1"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\\n2026" in line
    assert line.split(" ")[0].endswith("+0000")


def test_reads_that_list_collections_need_the_key_when_reads_do(
    make_client: Callable[..., TestClient],
) -> None:
    key = "k" * 20
    client = make_client(api_key=key, read_requires_key=True)
    for path in ("/metrics", "/v1/models", "/v1/collections"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"X-API-Key": key}).status_code == 200, path
    assert client.get("/healthz").status_code == 200


def test_openapi_documents_the_error_responses_with_one_model(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "ErrorResponse" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "422"} <= codes and ("503" in codes or path == "/v1/models"), (method, path)
            schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)
            if "{name}" in path:
                assert "404" in codes, (method, path)
    assert {"409", "413"} <= set(document["paths"]["/v1/collections"]["post"]["responses"])
    assert {"413", "415", "429"} <= set(document["paths"]["/v1/digits/recognize"]["post"]["responses"])


def _index(source: Path, models_dir: Path, url: str) -> list[str]:
    return [
        *("index", "--collection", "news", "--input", str(source), "--bundle", str(models_dir / "text")),
        *("--batch-size", "2", "--workers", "0", "--database-url", url, "--no-progress"),
    ]


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"id": "..", "text": "x"}], "document id '..' must not have an empty, '.' or '..' segment"),
        ([{"id": "a", "text": "lone \ud800"}], "surrogates"),
        ([{"text": "no id"}], "line 1"),
    ],
)
def test_semhash_index_bad_input_is_one_line_and_exit_3(
    migrated_url: str,
    models_dir: Path,
    tmp_path: Path,
    records: list[dict],
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from typer.testing import CliRunner

    from semhash_cli import app as cli

    source = _jsonl(tmp_path / "docs.jsonl", records)
    result = CliRunner().invoke(cli, _index(source, models_dir, migrated_url))
    assert result.exit_code == 3, result.output
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0].getMessage(), caplog.text
    assert "Traceback" not in result.output and errors[0].exc_info is None


def test_semhash_index_keeps_committed_batches_when_the_database_goes_away(
    migrated_url: str,
    models_dir: Path,
    topic_corpus: Corpus,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import psycopg
    from sqlalchemy import Engine, event, func, select
    from sqlalchemy.exc import OperationalError
    from typer.testing import CliRunner

    from semhash_cli import app as cli
    from service.db import Document, make_engine

    records = [{"id": topic_corpus.ids[i], "text": topic_corpus.texts[i]} for i in range(8)]
    source = _jsonl(tmp_path / "docs.jsonl", records)
    inserts = 0

    def lose_the_server_on_the_third_batch(_conn, _cursor, statement: str, *_args: object) -> None:
        nonlocal inserts
        if statement.lstrip().upper().startswith("INSERT INTO DOCUMENTS"):
            inserts += 1
            if inserts == 3:
                lost = psycopg.OperationalError(
                    "server closed the connection unexpectedly\n\tThis probably..."
                )
                raise OperationalError(statement, {}, lost)

    event.listen(Engine, "before_cursor_execute", lose_the_server_on_the_third_batch)
    try:
        result = CliRunner().invoke(cli, _index(source, models_dir, migrated_url))
    finally:
        event.remove(Engine, "before_cursor_execute", lose_the_server_on_the_third_batch)
    assert result.exit_code == 4, result.output
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "database is unavailable" in errors[0].getMessage(), caplog.text
    assert "\n" not in errors[0].getMessage() and "Traceback" not in result.output
    check = make_engine(migrated_url)
    try:
        with check.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(Document)) == 4  # two whole batches
    finally:
        check.dispose()
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    result = CliRunner().invoke(cli, _index(source, models_dir, unreachable))
    assert result.exit_code == 4 and "Traceback" not in result.output
