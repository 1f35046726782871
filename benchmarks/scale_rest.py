"""REST parts of benchmarks/scale.py: single-document writes through two `semhash serve` processes.

The collection (`scale-rest-<size>`, uniform synthetic codes, written straight into the table, in
PostgreSQL or SQLite) belongs to a tiny text bundle trained here on generated topic texts (20-bit
addresses, 128-bit codes), so upserts go through the real path: encode, one transaction each,
`apply_written`. Server A takes the writes, server B (another process on the same database) only
learns of them by polling.

* single: sequential single-document upserts to A; latency p50/p99, and for every 5th the time from A's
  answer until a search on B (by the document's address, radius 0, polled every 5 ms) returns it.
* mixed: one writer (upserts of new and existing ids, deletes of written and of loaded documents, as
  fast as answers come back) against A, and SEARCHERS concurrent searchers (radius 2, limit 10, random
  addresses; half on A, half on B), for `seconds`; then for half as long with CONCURRENT_WRITERS
  writers, each with one request in flight (its own connection), to see what one collection takes when
  writes overlap; then for half as long with the one writer and the searchers paced at
  PACED_SEARCH_RATE searches/s in all (they run on the same 2 cores as the servers: flat out, their own
  client CPU is part of what the writer competes with).
* check: after the mixed runs, each server's index size (from /metrics) against the SQL count, and every
  document a writer touched plus a sample of the others searched by its address on both servers:
  live ones must be found, deleted ones not. `lost_or_stale` counts every failure.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scale_data import SyntheticBundle, collection_size, external_ids, populate
from sqlalchemy import bindparam, text

from bundles.text import TextBundle
from service.db import make_engine
from service.migrate import upgrade_to_head
from training.corpus import Corpus
from training.text_train import train_text_bundle

REPO = Path(__file__).resolve().parent.parent
SEARCHERS = 8
CONCURRENT_WRITERS = 4  # the second mixed run: writer connections with a request in flight each
# The third: the one writer, and the 8 searchers at this many searches/s in all rather than flat out
# (flat out they make ~1,500-1,750/s, the most the 2 cores give; one server answered 678/s in
# search.json's run). The flat-out run stays the headline number.
PACED_SEARCH_RATE = 400.0
PORTS = (8771, 8772)
TOPICS = ("space", "hockey", "guns", "medicine")
SAMPLE_UNTOUCHED = 1000
SINGLE_UPSERTS = 300
VISIBILITY_EVERY = 5  # wait for every 5th upsert to show up in the second server
POLL_SECONDS = 0.5  # the servers' SEMHASH_INDEX_POLL_SECONDS (the default)


def _name(n: int) -> str:
    return f"scale-rest-{n // 1_000_000}m" if n % 1_000_000 == 0 else f"scale-rest-{n // 1000}k"


def _texts(rng: np.random.Generator, count: int) -> list[str]:
    topics = rng.integers(0, len(TOPICS), count)
    return [" ".join(f"{TOPICS[t]}{w}" for w in rng.integers(0, 25, 30)) for t in topics.tolist()]


def prepare_rest(url: str, n: int, scratch: Path, seed: int) -> TextBundle:
    """The tiny bundle (trained once) and the collection of n synthetic documents (filled once)."""
    bundle_dir = scratch / "models" / "text"
    if not (bundle_dir / "config.json").exists():
        rng = np.random.default_rng(0)
        texts = _texts(rng, 240)
        corpus = Corpus([f"t{i}" for i in range(240)], texts, ["x"] * 240, "generated")
        train_text_bundle(corpus, bundle_dir, profile="tiny", address_bits=20, long_bits=128, seed=0)
    bundle = TextBundle.load(bundle_dir)
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        if collection_size(engine, _name(n)) != n:
            synthetic = SyntheticBundle(
                bundle.bundle_id, bundle.fingerprint, bundle.address_bits, bundle.long_bits
            )
            seconds = populate(engine, _name(n), n, synthetic, "uniform", seed)
            print(f"[populate] {_name(n)}: {n} documents in {seconds:.1f} s", flush=True)
    finally:
        engine.dispose()
    return bundle


class _Closed(ConnectionError):
    """The server closed the connection."""


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


class Client:
    """One keep-alive HTTP/1.1 connection on a plain socket, requests written and responses read by
    hand (Content-Length bodies, all the servers send). http.client spent ~0.45 ms of client CPU per
    request (it parses every header with the email package): at a few hundred writes/s, a load generator
    that takes a fifth of a core from the servers on these 2 cores, and half a millisecond of every
    write's turnaround that is the client's, not the server's."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        request = (head + "\r\n").encode() + payload
        for attempt in range(2):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock.sendall(request)
                return self._response()
            except (BrokenPipeError, ConnectionResetError, _Closed):
                # The server closed an idle keep-alive connection: open a new one, once.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _response(self) -> tuple[int, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        found = _CONTENT_LENGTH.search(head)
        length = int(found.group(1)) if found else 0
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(head[9:12]), body

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed
        self.buffer += chunk

    def ids_at(self, name: str, address: int) -> set[str]:
        """The ids a search finds at exactly `address`."""
        body = {"address": address, "radius": 0, "limit": 10_000, "rerank": "none"}
        status, data = self.call("POST", f"/v1/collections/{name}/search", body)
        if status != 200:
            raise RuntimeError(f"search answered {status}: {data[:200]!r}")
        return {hit["id"] for hit in json.loads(data)["data"]}

    def found(self, name: str, address: int, document_id: str) -> bool:
        return document_id in self.ids_at(name, address)

    def index_size(self, name: str) -> int:
        status, data = self.call("GET", "/metrics")
        match = re.search(
            rf'semhash_index_documents{{collection="{re.escape(name)}"}} ([0-9.e+]+)', data.decode()
        )
        return int(float(match.group(1))) if match else -1


# `semhash serve`, optionally with another GIL switch interval (SCALE_SWITCH_INTERVAL, seconds).
_SERVE = (
    [
        sys.executable,
        "-c",
        "import sys; sys.setswitchinterval(float(sys.argv.pop(1))); "
        "from semhash_cli import app; sys.argv[0] = 'semhash'; app()",
        os.environ["SCALE_SWITCH_INTERVAL"],
    ]
    if os.environ.get("SCALE_SWITCH_INTERVAL")
    else [str(Path(sys.executable).parent / "semhash")]
)


def _start_servers(url: str, models: Path, scratch: Path) -> list[subprocess.Popen]:
    # PYTHONPATH: the servers run this checkout's code, wherever the virtual environment was installed from.
    environment = {
        **os.environ,
        "SEMHASH_LOG_FORMAT": "text",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    servers = []
    for port in PORTS:
        log = open(scratch / f"server_{port}.log", "w")  # noqa: SIM115 (closed with the process)
        servers.append(
            subprocess.Popen(
                [
                    *_SERVE,
                    "serve",
                    "--port",
                    str(port),
                    "--models",
                    str(models),
                    "--database-url",
                    url,
                    "--workers",
                    "1",
                    "--no-access-log",
                ],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        )
    return servers


def _wait_loaded(name: str, n: int, timeout: float = 600) -> float:
    started = time.perf_counter()
    for port in PORTS:
        while True:
            try:
                if Client(port).index_size(name) >= n:
                    break
            except OSError:
                pass
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"server {port} did not load {name} in {timeout} s")
            time.sleep(0.2)
    return time.perf_counter() - started


def bench_single(bundle: TextBundle, name: str, count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed + 10)
    texts = _texts(rng, count)
    addresses = bundle.encode(texts).addresses.tolist()
    writer, reader = Client(PORTS[0]), Client(PORTS[1])
    upserts, visible = [], []
    for i, (body_text, address) in enumerate(zip(texts, addresses, strict=True)):
        document_id = f"single-{seed}-{i}"
        if i % VISIBILITY_EVERY == 0:
            # Waiting for B to find the last sampled write puts us right after one of its polls: a
            # random pause keeps the sampled writes from all landing at the same point of its cycle.
            time.sleep(rng.uniform(0, POLL_SECONDS))
        started = time.perf_counter()
        status, data = writer.call(
            "POST",
            f"/v1/collections/{name}/documents",
            {"documents": [{"id": document_id, "text": body_text}]},
        )
        answered = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"upsert answered {status}: {data[:200]!r}")
        upserts.append((answered - started) * 1000)
        if i % VISIBILITY_EVERY:
            continue
        while not reader.found(name, address, document_id):
            time.sleep(0.005)
            if time.perf_counter() - answered > 10:
                raise RuntimeError(f"{document_id} never showed up in the second process")
        visible.append((time.perf_counter() - answered) * 1000)
    result = {
        "upserts": count,
        "visibility_samples": len(visible),
        "upsert_ms_p50": statistics.median(upserts),
        "upsert_ms_p99": float(np.percentile(upserts, 99)),
        "visible_ms_p50": statistics.median(visible),
        "visible_ms_p99": float(np.percentile(visible, 99)),
        "visible_ms_max": max(visible),
    }
    print(
        f"[rest single] upsert p50 {result['upsert_ms_p50']:.2f} ms p99 {result['upsert_ms_p99']:.2f} ms; "
        f"visible in B p50 {result['visible_ms_p50']:.0f} ms max {result['visible_ms_max']:.0f} ms",
        flush=True,
    )
    return result


def _writer(name: str, n: int, seconds: float, seed: int, start_at: float) -> dict:
    """Single-document upserts and deletes against server A, one at a time, as fast as it answers."""
    rng = np.random.default_rng(seed + 20)
    client = Client(PORTS[0])
    texts = _texts(rng, 4096)
    live: list[str] = []  # written ids still live
    state: dict[str, bool] = {}
    counts = {"insert": 0, "replace": 0, "delete": 0}
    latencies: list[float] = []
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds
    step = 0
    while time.perf_counter() < deadline:
        draw = rng.random()
        if draw < 0.2 and live:  # delete: a written document or one of the loaded ones
            if rng.random() < 0.5:
                document_id = live.pop(int(rng.integers(0, len(live))))
            else:
                document_id = external_ids(int(rng.integers(0, n)), 1)[0].decode()
            started = time.perf_counter()
            status, _ = client.call("DELETE", f"/v1/collections/{name}/documents/{document_id}")
            kind, ok, alive = "delete", status in (204, 404), False
        else:
            if draw < 0.5 and live:
                kind, document_id = "replace", live[int(rng.integers(0, len(live)))]
            else:
                kind, document_id = "insert", f"mixed-{seed}-{step}"
                live.append(document_id)
            body = {"documents": [{"id": document_id, "text": texts[step % len(texts)]}]}
            started = time.perf_counter()
            status, _ = client.call("POST", f"/v1/collections/{name}/documents", body)
            ok, alive = status == 200, True
        if not ok:
            raise RuntimeError(f"{kind} of {document_id} answered {status}")
        latencies.append((time.perf_counter() - started) * 1000)
        counts[kind] += 1
        state[document_id] = alive
        step += 1
    return {"counts": counts, "latencies": latencies, "state": state}


async def _search_loop(
    port: int, name: str, deadline: float, rng, latencies: list[float], interval: float
) -> None:
    """Searches one after another; with interval > 0, one every `interval` seconds (a search that
    comes back late is followed at once, and the schedule catches up), else as fast as they come back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    scheduled = time.perf_counter() + (rng.uniform(0, interval) if interval else 0.0)
    try:
        while time.perf_counter() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                scheduled += interval
            body = json.dumps({"address": int(rng.integers(0, 1 << 20)), "radius": 2, "limit": 10}).encode()
            request = (
                f"POST /v1/collections/{name}/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"search answered {head[:40]!r}")
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()


def _searchers(name: str, seconds: float, seed: int, start_at: float, rate: float) -> list[float]:
    rng = np.random.default_rng(seed + 30)
    latencies: list[float] = []
    time.sleep(max(0.0, start_at - time.time()))

    async def run() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(
            *(
                _search_loop(PORTS[i % 2], name, deadline, rng, latencies, SEARCHERS / rate if rate else 0.0)
                for i in range(SEARCHERS)
            )
        )

    asyncio.run(run())
    return latencies


def bench_mixed(
    name: str, n: int, seconds: float, seed: int, writers: int, search_rate: float = 0.0
) -> tuple[dict, dict[str, bool]]:
    """`writers` connections each writing one document at a time (the issue's writer is one; more show
    what one collection takes when requests overlap), SEARCHERS searchers: as fast as they are answered,
    or `search_rate` searches/s in all."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1 + writers) as pool:
        start_at = time.time() + 2.0
        # Each writer its own ids (its seed); deleting a loaded document twice is a 404, also fine.
        writes = [
            pool.apply_async(_writer, (name, n, seconds, seed + 1000 * k, start_at)) for k in range(writers)
        ]
        searches = pool.apply_async(_searchers, (name, seconds, seed, start_at, search_rate))
        written, latencies = [w.get() for w in writes], searches.get()
    counts = {kind: sum(w["counts"][kind] for w in written) for kind in written[0]["counts"]}
    write_latencies = [latency for w in written for latency in w["latencies"]]
    state = {key: alive for w in written for key, alive in w["state"].items()}
    upserts = counts["insert"] + counts["replace"]
    result = {
        "seconds": seconds,
        "writers": writers,
        "searchers": SEARCHERS,
        "search_rate_target": search_rate or None,
        "writes": counts,
        "writes_per_s": sum(counts.values()) / seconds,
        "upserts_per_s": upserts / seconds,
        "write_ms_p50": statistics.median(write_latencies),
        "write_ms_p99": float(np.percentile(write_latencies, 99)),
        "searches": len(latencies),
        "searches_per_s": len(latencies) / seconds,
        "search_ms_p50": statistics.median(latencies),
        "search_ms_p99": float(np.percentile(latencies, 99)),
    }
    print(
        f"[rest mixed, {writers} writer(s)] {result['writes_per_s']:.0f} writes/s "
        f"({result['upserts_per_s']:.0f} upserts/s), "
        f"{result['searches_per_s']:.0f} searches/s, search p50 {result['search_ms_p50']:.2f} ms "
        f"p99 {result['search_ms_p99']:.2f} ms",
        flush=True,
    )
    return result, state


def check(url: str, name: str, n: int, touched: dict[str, bool], seed: int) -> dict:
    """Both servers against SQL once they have had time to poll (see the module docstring)."""
    time.sleep(2.0)
    rng = np.random.default_rng(seed + 40)
    sample = [item.decode() for item in external_ids(0, n)[rng.choice(n, SAMPLE_UNTOUCHED, replace=False)]]
    wanted = sorted(set(touched) | set(sample))
    engine = make_engine(url)
    with engine.connect() as connection:
        collection_id = connection.scalar(text("SELECT id FROM collections WHERE name = :n"), {"n": name})
        sql_count = connection.scalar(
            text("SELECT count(*) FROM documents WHERE collection_id = :c AND NOT deleted"),
            {"c": collection_id},
        )
        rows = {}
        by_ids = text(
            "SELECT external_id, address, deleted FROM documents "
            "WHERE collection_id = :c AND external_id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        for start in range(0, len(wanted), 5000):
            found = connection.execute(by_ids, {"c": collection_id, "ids": wanted[start : start + 5000]})
            for external_id, address, deleted in found:
                rows[external_id] = (address, bool(deleted))
    engine.dispose()
    result: dict = {"sql_count": sql_count, "checked_documents": len(rows), "processes": {}}
    lost_or_stale = 0
    for port in PORTS:
        client = Client(port)
        size = client.index_size(name)
        lost = stale = 0
        # One search per address: the writers' texts share a few addresses, thousands of documents each.
        at: dict[int, set[str]] = {}
        for external_id, (address, deleted) in rows.items():
            if address not in at:
                at[address] = client.ids_at(name, address)
            found = external_id in at[address]
            lost += int(not deleted and not found)
            stale += int(deleted and found)
        result["processes"][str(port)] = {"index_size": size, "lost": lost, "stale": stale}
        lost_or_stale += lost + stale + abs(size - sql_count)
    result["lost_or_stale"] = lost_or_stale
    print(f"[rest check] {result}", flush=True)
    return result


def commit_latency(url: str, count: int = 200) -> dict:
    """The database's own floor under a write: p50/p99 ms of a one-row UPDATE and its COMMIT, with the
    service's engine settings (a PostgreSQL commit waits for its WAL flush; SQLite's WAL with
    synchronous=NORMAL does not sync at commit)."""
    engine = make_engine(url)
    timings = []
    with engine.connect() as connection:
        connection.execute(
            text("CREATE TABLE IF NOT EXISTS scale_commit_probe (id INTEGER PRIMARY KEY, v INTEGER)")
        )
        connection.execute(text("DELETE FROM scale_commit_probe"))
        connection.execute(text("INSERT INTO scale_commit_probe VALUES (1, 0)"))
        connection.commit()
        for _ in range(count):
            started = time.perf_counter()
            connection.execute(text("UPDATE scale_commit_probe SET v = v + 1 WHERE id = 1"))
            connection.commit()
            timings.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    result = {"commit_ms_p50": statistics.median(timings), "commit_ms_p99": float(np.percentile(timings, 99))}
    print(f"[rest commit] {result}", flush=True)
    return result


def bench_rest(url: str, n: int, scratch: Path, seed: int, mixed_seconds: float) -> dict:
    bundle = prepare_rest(url, n, scratch, seed)
    name = _name(n)
    database = commit_latency(url)
    servers = _start_servers(url, scratch / "models", scratch)
    try:
        load_seconds = _wait_loaded(name, n)
        single = bench_single(bundle, name, SINGLE_UPSERTS, seed)
        mixed, touched = bench_mixed(name, n, mixed_seconds, seed, writers=1)
        # The two variants run half as long (keeping one database's run within ~6 minutes).
        concurrent, touched_too = bench_mixed(
            name, n, mixed_seconds / 2, seed + 1, writers=CONCURRENT_WRITERS
        )
        paced, touched_paced = bench_mixed(
            name, n, mixed_seconds / 2, seed + 2, writers=1, search_rate=PACED_SEARCH_RATE
        )
        checked = check(url, name, n, {**touched, **touched_too, **touched_paced}, seed)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=60)
    return {
        "database": database,
        "servers_ready_seconds": load_seconds,
        "single": single,
        "mixed": mixed,
        "mixed_concurrent_writers": concurrent,
        "mixed_paced_searches": paced,
        "check": checked,
    }
