"""HTTP checks for deploy/smoke.sh (standard library only; runs on the host against the compose stack).

    python3 deploy/smoke_http.py wait URL SECONDS               until GET URL answers 200
    python3 deploy/smoke_http.py search BASE COLLECTION TEXT    one search: prints {"seconds", "hits"}
    python3 deploy/smoke_http.py count BASE COLLECTION          the collection's document count
    python3 deploy/smoke_http.py visibility WRITE_BASE READ_BASE COLLECTION TRIALS
    python3 deploy/smoke_http.py load BASE COLLECTION SECONDS CONCURRENCY
    python3 deploy/smoke_http.py drain BASE COLLECTION REQUESTS DOCS_EACH CONTAINER

Writes send X-API-Key from $SEMHASH_API_KEY. Every command prints one JSON object and exits non-zero
when its check fails.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Any

QUERIES = [
    "Does the encryption chip let the government read my email? Clipper key escrow and privacy",
    "the shuttle launch was delayed because of the weather at the cape",
    "which graphics card works best with x windows on a sparc station",
    "the goalie made forty saves and the team won the cup in overtime",
    "god exists and the bible says so but atheists disagree about morality",
    "my car engine makes a noise when the oil is low",
]


def request(base: str, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    """One request on a fresh connection: (status, decoded JSON or None)."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    headers = {"Connection": "close"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if method != "GET":
        headers["X-API-Key"] = os.environ.get("SEMHASH_API_KEY", "")
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        try:
            return response.status, json.loads(payload) if payload else None
        except json.JSONDecodeError:
            return response.status, payload.decode(errors="replace")
    finally:
        conn.close()


def _hit_ids(result: Any) -> list[str]:
    hits = result.get("data", []) if isinstance(result, dict) else []
    return [str(hit.get("id")) for hit in hits]


def search(base: str, collection: str, text: str, limit: int = 10) -> tuple[int, list[str]]:
    status, result = request(
        base, "POST", f"/v1/collections/{collection}/search", {"text": text, "limit": limit}
    )
    return status, _hit_ids(result) if status == 200 else []


def cmd_wait(url: str, seconds: str) -> dict[str, Any]:
    deadline = time.monotonic() + float(seconds)
    start = time.monotonic()
    parts = urllib.parse.urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    while time.monotonic() < deadline:
        try:
            if request(base, "GET", parts.path or "/", timeout=5)[0] == 200:
                return {"ok": True, "seconds": round(time.monotonic() - start, 2)}
        except OSError:
            pass
        time.sleep(0.25)
    return {"ok": False, "seconds": float(seconds)}


def cmd_search(base: str, collection: str, text: str) -> dict[str, Any]:
    start = time.monotonic()
    status, ids = search(base, collection, text)
    return {
        "ok": status == 200 and bool(ids),
        "status": status,
        "hits": len(ids),
        "seconds": round(time.monotonic() - start, 3),
    }


def cmd_count(base: str, collection: str) -> dict[str, Any]:
    status, result = request(base, "GET", f"/v1/collections/{collection}")
    count = result.get("document_count") if isinstance(result, dict) else None
    return {"ok": status == 200 and isinstance(count, int), "status": status, "documents": count}


def cmd_visibility(write_base: str, read_base: str, collection: str, trials: str) -> dict[str, Any]:
    """Write a document through one replica; poll the other until a search finds it."""
    seconds = []
    for _ in range(int(trials)):
        marker = uuid.uuid4().hex[:12]
        doc_id = f"smoke-visibility-{marker}"
        text = f"orbiter heat shield tiles inspected by the shuttle crew before launch {marker}"
        status, result = request(
            write_base,
            "POST",
            f"/v1/collections/{collection}/documents",
            {"documents": [{"id": doc_id, "text": text}]},
        )
        if status != 200:
            return {"ok": False, "status": status, "error": result}
        written = time.monotonic()
        while doc_id not in search(read_base, collection, text, limit=50)[1]:
            if time.monotonic() - written > 10:
                return {"ok": False, "error": f"{doc_id} not found through the other replica in 10 s"}
            time.sleep(0.02)
        seconds.append(time.monotonic() - written)
    worst = max(seconds)
    return {
        "ok": worst < 1.0,
        "max_seconds": round(worst, 3),
        "median_seconds": round(statistics.median(seconds), 3),
        "trials": len(seconds),
    }


def cmd_load(base: str, collection: str, seconds: str, concurrency: str) -> dict[str, Any]:
    """Searches from CONCURRENCY threads for SECONDS: requests per second and errors."""
    stop = time.monotonic() + float(seconds)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                status, _ = search(base, collection, QUERIES[i % len(QUERIES)])
                outcome = None if status == 200 else f"HTTP {status}"
            except OSError as err:
                outcome = repr(err)
            with lock:
                if outcome is None:
                    latencies.append(time.monotonic() - start)
                else:
                    errors.append(outcome)
            i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(int(concurrency))]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    return {
        "ok": not errors and bool(latencies),
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "concurrency": int(concurrency),
        "seconds": round(elapsed, 1),
    }


def cmd_drain(base: str, collection: str, requests: str, docs_each: str, container: str) -> dict[str, Any]:
    """REQUESTS slow batch writes to one replica, `docker stop` it once all are sent: all must succeed."""
    url = urllib.parse.urlsplit(base)
    outcomes: list[Any] = [None] * int(requests)
    sent = [threading.Event() for _ in outcomes]
    done_at = [float("inf")] * len(outcomes)
    batches = [
        [
            {"id": f"smoke-drain-{k}-{j}", "text": f"{QUERIES[j % len(QUERIES)]} drain batch {k} doc {j}"}
            for j in range(int(docs_each))
        ]
        for k in range(len(outcomes))
    ]

    def writer(k: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        try:
            body = json.dumps({"documents": batches[k]}).encode()
            headers = {"Content-Type": "application/json", "X-API-Key": os.environ.get("SEMHASH_API_KEY", "")}
            conn.request("POST", f"/v1/collections/{collection}/documents", body=body, headers=headers)
            sent[k].set()  # the whole request is on the wire: from here on it is in flight
            response = conn.getresponse()
            response.read()
            outcomes[k] = response.status
        except OSError as err:
            outcomes[k] = repr(err)
        finally:
            done_at[k] = time.monotonic()
            sent[k].set()
            conn.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(len(outcomes))]
    for thread in threads:
        thread.start()
    for event in sent:
        event.wait(30)
    start = time.monotonic()
    stopped = subprocess.run(["docker", "stop", "--time", "30", container], capture_output=True, text=True)
    stop_seconds = time.monotonic() - start
    for thread in threads:
        thread.join()
    # Requests still running when SIGTERM went out: without any, the check would prove nothing.
    in_flight_at_stop = sum(1 for at in done_at if at > start)
    ok = stopped.returncode == 0 and in_flight_at_stop > 0 and all(outcome == 200 for outcome in outcomes)
    return {
        "ok": ok,
        "requests": len(outcomes),
        "in_flight_at_stop": in_flight_at_stop,
        "statuses": outcomes,
        "stop_seconds": round(stop_seconds, 2),
        "documents_each": int(docs_each),
    }


COMMANDS = {
    "wait": cmd_wait,
    "search": cmd_search,
    "count": cmd_count,
    "visibility": cmd_visibility,
    "load": cmd_load,
    "drain": cmd_drain,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    outcome = COMMANDS[sys.argv[1]](*sys.argv[2:])
    sys.stdout.write(json.dumps(outcome) + "\n")
    sys.exit(0 if outcome["ok"] else 1)
