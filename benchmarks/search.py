"""Search benchmarks; writes benchmarks/results/search.json.

    .venv/bin/python benchmarks/search.py [--bundle artifacts/text] [--parts lookup,rest,bulk]

* lookup: BitIndex Hamming-ball lookup on 1,000,000 documents with 20-bit addresses, for random codes
  and for the 20 Newsgroups train codes replicated with bit-flip noise; FAISS IndexBinaryHash on the
  same codes at radius 2; a brute-force popcount scan over the same addresses, both as numpy and
  compiled with numba like our lookup (the faster of the two is the baseline). Every lookup returns
  the whole ball (limit = 10,000) and FAISS's and the scans' answers are checked against ours.
* rest: `semhash serve` (uvicorn, one process) on loopback over the 20 Newsgroups train index, queried
  with test-split texts: median latency with one client, then requests/s with a bounded concurrent
  load generator (a separate process on raw keep-alive sockets, so it costs the server little CPU).
* bulk: `semhash index` (in its own process, as a user runs it) over the whole 20 Newsgroups train
  split, read from its .jsonl.gz file, into a fresh SQLite file and a fresh PostgreSQL database,
  encoding in the job's process and in the CLI's default worker processes; the rate it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from databases import fresh_postgres_database  # noqa: E402
from served import server  # noqa: E402

from bundles.text import TextBundle  # noqa: E402
from service.codes import long_codes_to_words  # noqa: E402
from service.index import BitIndex  # noqa: E402
from service.migrate import upgrade_to_head  # noqa: E402
from training.corpus import load_corpus  # noqa: E402

N_DOCUMENTS = 1_000_000
ADDRESS_BITS = 20
QUERIES = 2000
NOISE_FLIP_PROBABILITY = 0.05  # per address bit, for the replicated corpus codes


def median_us(function, queries) -> float:
    timings = []
    for query in queries:
        started = time.perf_counter_ns()
        function(query)
        timings.append(time.perf_counter_ns() - started)
    return statistics.median(timings) / 1000.0


def replicate_with_noise(codes: np.ndarray, bits: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """`total` addresses drawn from `codes`, each bit flipped with NOISE_FLIP_PROBABILITY."""
    picked = codes[rng.integers(0, len(codes), total)]
    flips = rng.random((total, bits)) < NOISE_FLIP_PROBABILITY
    noise = (flips * (np.uint64(1) << np.arange(bits, dtype=np.uint64))).sum(axis=1, dtype=np.uint64)
    return picked ^ noise


def faiss_hash_index(addresses: np.ndarray):
    """IndexBinaryHash over the addresses (padded to 24 bits, as FAISS needs whole bytes)."""
    import faiss

    index = faiss.IndexBinaryHash(24, 24)  # hash on all 24 bits; the 4 padding bits are always 0
    index.nflip = 2
    index.add(to_faiss_codes(addresses))
    return index


def to_faiss_codes(addresses: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(addresses.astype(">u4").view(np.uint8).reshape(-1, 4)[:, 1:])


@numba.njit(cache=True)
def compiled_scan(addresses: np.ndarray, query: int, radius: int) -> np.ndarray:
    """Positions of every address within `radius` of `query`: one pass, popcount <= radius tested by
    clearing the lowest set bit `radius` times."""
    hits = np.empty(addresses.shape[0], dtype=np.int64)
    found = 0
    for position in range(addresses.shape[0]):
        difference = addresses[position] ^ query
        for _ in range(radius):
            difference &= difference - 1
        if difference == 0:
            hits[found] = position
            found += 1
    return hits[:found].copy()


def bench_lookup(addresses: np.ndarray, queries: np.ndarray, label: str, with_baselines: bool) -> dict:
    n = len(addresses)
    rng = np.random.default_rng(1)
    long_words = long_codes_to_words(rng.integers(0, 256, (n, 16), dtype=np.uint8))
    index = BitIndex.build(ADDRESS_BITS, np.arange(n), [str(i) for i in range(n)], addresses, long_words)
    # The whole ball (up to the API's maximum limit), and the API's default shortlist of 100.
    results: dict = {"lookup_us_p50": {}, "lookup_us_p50_limit100": {}}
    for radius in (1, 2, 3):
        results["lookup_us_p50"][f"r{radius}"] = median_us(
            lambda q, radius=radius: index.lookup(int(q), radius, 10_000), queries
        )
        results["lookup_us_p50_limit100"][f"r{radius}"] = median_us(
            lambda q, radius=radius: index.lookup(int(q), radius, 100), queries
        )
    sizes = [len(index.lookup(int(q), 2, 10_000).positions) for q in queries[:200]]
    results["mean_ball_size_r2"] = float(np.mean(sizes))
    print(f"[{label}] lookup p50 us, whole ball: {results['lookup_us_p50']}")
    print(f"[{label}] lookup p50 us, limit 100: {results['lookup_us_p50_limit100']}")
    print(f"[{label}] mean r2 ball (capped at 10,000): {results['mean_ball_size_r2']:.0f}")
    if not with_baselines:
        return results
    faiss_index = faiss_hash_index(addresses)
    faiss_queries = to_faiss_codes(queries)
    for i in range(20):  # the two must agree before their timings mean anything
        _, _, found = faiss_index.range_search(faiss_queries[i : i + 1], 3)
        ours = index.row_ids_at(index.lookup(int(queries[i]), 2, 10_000).positions)
        assert sorted(found.tolist()) == sorted(ours.tolist()), "FAISS and BitIndex disagree"
    results["faiss_hash_us_p50"] = {
        "r2": median_us(lambda i: faiss_index.range_search(faiss_queries[i : i + 1], 3), range(len(queries)))
    }
    signed_addresses = index.addresses_at(index.live_positions()).astype(np.int64)
    for query in queries[:20]:
        ours = np.sort(index.lookup(int(query), 2, 10_000).positions)
        assert np.array_equal(compiled_scan(signed_addresses, int(query), 2), ours), "scan disagrees"
    scans = {
        "numpy": median_us(lambda q: index.brute_force_ball(int(q), 2), queries[:200]),
        "numba": median_us(lambda q: compiled_scan(signed_addresses, int(q), 2), queries[:200]),
    }
    results["bruteforce_us_p50_by_implementation"] = scans
    results["bruteforce_us_p50"] = min(scans.values())
    speedup = results["bruteforce_us_p50"] / results["lookup_us_p50"]["r2"]
    results["lookup_speedup_over_bruteforce_r2"] = speedup
    print(f"[{label}] faiss r2 {results['faiss_hash_us_p50']['r2']:.1f} us")
    print(f"[{label}] brute force {scans} us; lookup r2 is {speedup:.0f}x faster")
    return results


BULK_REPEATS = 3
_INDEXED_LOG = re.compile(r"indexed (\d+) of \d+ documents .* \((\d+) docs/s\)")


def bulk_index(url: str, bundle_dir: Path, workers: int) -> float:
    """Run `semhash index --input 20news` (the train split, read from its .jsonl.gz file) into the
    empty database at `url` in a fresh process, as a user would; returns the docs/s it reports."""
    upgrade_to_head(url)
    semhash = Path(sys.executable).with_name("semhash")  # the console script of this environment
    command = [
        *(str(semhash), "index", "--collection", "20news", "--input", "20news", "--bundle", str(bundle_dir)),
        *("--workers", str(workers), "--database-url", url, "--no-progress"),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    found = _INDEXED_LOG.search(finished.stderr)
    if found is None:
        raise RuntimeError(f"no report in the output of {' '.join(command)}:\n{finished.stderr}")
    written, rate = int(found.group(1)), float(found.group(2))
    print(f"[bulk {url.split(':')[0]}, {workers} workers] {written} docs, {rate:.0f} docs/s")
    return rate


def bench_bulk(bundle_dir: Path, scratch: Path, database_path: Path) -> dict:
    """Both backends, encoding in the job's process and in the CLI's default worker processes; the
    median of BULK_REPEATS runs each. The last SQLite run writes `database_path`, which the REST part
    serves."""
    default_workers = min(os.cpu_count() or 1, 4)
    runs: dict = {"sqlite": {}, "postgresql": {}}
    for workers in (0, default_workers):
        runs["sqlite"][workers], runs["postgresql"][workers] = [], []
        for repeat in range(BULK_REPEATS):
            path = scratch / f"bulk_{workers}_{repeat}.db"
            runs["sqlite"][workers].append(bulk_index(f"sqlite:///{path}", bundle_dir, workers))
            with fresh_postgres_database() as url:
                runs["postgresql"][workers].append(bulk_index(url, bundle_dir, workers))
    (scratch / f"bulk_{default_workers}_{BULK_REPEATS - 1}.db").rename(database_path)
    medians = {
        backend: {workers: statistics.median(rates) for workers, rates in by_workers.items()}
        for backend, by_workers in runs.items()
    }
    return {
        "bulk_docs_per_s": {backend: by_workers[default_workers] for backend, by_workers in medians.items()},
        "bulk_docs_per_s_by_workers": medians,
        "bulk_runs_docs_per_s": runs,
        "bulk_default_workers": default_workers,
    }


async def _post_loop(
    port: int, bodies: list[bytes], deadline: float, budget: list[int], latencies: list[float]
):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            body = bodies[budget[0] % len(bodies)]
            request = (
                f"POST /v1/collections/20news/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"search answered {status}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _load(port: int, bodies: list[bytes], connections: int, seconds: float, max_requests: int) -> dict:
    latencies: list[float] = []
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_post_loop(port, bodies, deadline, budget, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000,
    }


def bench_rest(models_dir: Path, database_path: Path, queries: list[str], workers: int) -> dict:
    port = 8765
    with server(models=models_dir, database_url=f"sqlite:///{database_path}", port=port, workers=workers):
        bodies = [json.dumps({"text": query, "radius": 2, "limit": 100}).encode() for query in queries]
        asyncio.run(_load(port, bodies, 1, 3.0, 200))  # warm-up
        single = asyncio.run(_load(port, bodies, 1, 10.0, 1000))
        loaded = asyncio.run(_load(port, bodies, 16, 15.0, 20_000))
    print(f"[rest] one client: p50 {single['p50_ms']:.2f} ms")
    print(f"[rest] 16 connections: {loaded['rps']:.0f} req/s, p50 {loaded['p50_ms']:.2f} ms")
    return {"server_workers": workers, "single_client": single, "concurrent_16": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=REPO / "artifacts", help="directory with text/ bundle")
    parser.add_argument("--parts", default="lookup,bulk,rest")
    parser.add_argument("--server-workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/search.json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    bundle = TextBundle.load(args.models / "text")
    if bundle.address_bits != ADDRESS_BITS:
        raise SystemExit(
            f"the bundle has {bundle.address_bits}-bit addresses; this benchmark needs {ADDRESS_BITS}"
        )
    train = load_corpus("20news", "train")
    test = load_corpus("20news", "test")
    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    # The machine is shared: the load average says how much else was running.
    results["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "bundle_id": bundle.bundle_id,
        "command": " ".join(["python", *sys.argv]),
    }
    rng = np.random.default_rng(0)
    if "lookup" in parts:
        random_addresses = rng.integers(0, 1 << ADDRESS_BITS, N_DOCUMENTS, dtype=np.uint64)
        random_queries = rng.integers(0, 1 << ADDRESS_BITS, QUERIES, dtype=np.uint64)
        results.update(bench_lookup(random_addresses, random_queries, "random codes", with_baselines=True))
        corpus_codes = encode_all(bundle, train.texts)
        query_codes = encode_all(bundle, test.texts[:QUERIES])
        noisy = replicate_with_noise(corpus_codes, ADDRESS_BITS, N_DOCUMENTS, rng)
        corpus_results = bench_lookup(noisy, query_codes, "20news codes + noise", with_baselines=False)
        results["20news_noise"] = corpus_results
    with tempfile.TemporaryDirectory() as scratch:
        database_path = Path(scratch) / "bench.db"
        if "bulk" in parts:
            results.update(bench_bulk(args.models / "text", Path(scratch), database_path))
        elif "rest" in parts:
            bulk_index(f"sqlite:///{database_path}", args.models / "text", workers=0)
        if "rest" in parts:
            rest = bench_rest(args.models, database_path, test.texts[:2000], args.server_workers)
            results["rest_search_ms_p50"] = rest["single_client"]["p50_ms"]
            results["rest_search_rps"] = rest["concurrent_16"]["rps"]
            results["rest_detail"] = rest
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


def encode_all(bundle: TextBundle, texts: list[str]) -> np.ndarray:
    """Addresses of the texts the model can encode (the others have no vocabulary word)."""
    addresses = []
    for start in range(0, len(texts), 1000):
        batch = texts[start : start + 1000]
        counts = bundle.counts(batch)
        keep = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
        addresses.append(bundle.encode_counts(counts[keep]).addresses)
    return np.concatenate(addresses)


if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
