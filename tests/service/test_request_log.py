"""Request ids and structured log lines."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.request_log import JsonFormatter, RequestIdFilter


def test_response_carries_a_fresh_request_id(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert len(first) == 32 and first != second


def test_a_sane_caller_id_is_kept_and_a_bad_one_replaced(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "proxy-42.a"}).headers["x-request-id"] == "proxy-42.a"
    )
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert replaced != "bad id\twith spaces" and len(replaced) == 32


def test_rejected_requests_are_tagged_too(client: TestClient) -> None:
    response = client.post("/v1/collections/none/search", json={"radius": -1})
    assert 400 <= response.status_code < 500
    assert response.headers["x-request-id"]


def test_each_request_is_logged_as_json_with_its_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="semhash.request"):
        response = client.get("/healthz", headers={"X-Request-ID": "abc123"})
    records = [r for r in caplog.records if r.name == "semhash.request"]
    assert records, "no request log line"
    record = records[-1]
    RequestIdFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert response.status_code == 200
    assert entry["path"] == "/healthz" and entry["status"] == 200 and entry["method"] == "GET"
    assert entry["duration_ms"] >= 0 and entry["level"] == "INFO"
