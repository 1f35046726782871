"""The index at scale (issue #11); writes benchmarks/results/scale.json.

    .venv/bin/python benchmarks/scale.py                      # published sizes: 1M and 10M documents
    .venv/bin/python benchmarks/scale.py --quick --out /tmp/scale.json   # 20k / 100k, a few seconds each

Parts (`--parts`, all by default):
* write: `SegmentedIndex.apply` of one-document changes (insert, replace, delete) on a 1M-document index
  (20-bit addresses, 128-bit codes), the index work of a single-document write; and one merge.
* lookup: `BitIndex.lookup` p50/p99 at r = 1, 2, 3 (whole ball, limit 10,000, as in search.json) on
  uniform and clustered codes (`benchmarks/scale_data.py`) at 1M (20 bits) and 10M (23 bits): about one
  document per address, the regime README's "Choosing address_bits" recommends.
* load: synthetic collections written into PostgreSQL (COPY) and SQLite; each loaded by
  `load_segment` + `SegmentedIndex` (what a server does on start) in a fresh process after a warm-up
  load: seconds, and RSS growth per document beyond the 10-byte external id; lookups on that index.
* rest, mixed: two `semhash serve` processes on a 1M collection in PostgreSQL, then in SQLite
  (`benchmarks/scale_rest.py`). The top-level rest keys are PostgreSQL's (the production database);
  `*_by_database` keys hold both.

Keys are nested: `write_index_ms_p50.1m` is scale["write_index_ms_p50"]["1m"].
Populating the databases is not timed here and is skipped when the collection is already there.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from databases import postgres_database  # noqa: E402
from scale_data import (  # noqa: E402
    ID_BYTES,
    SyntheticBundle,
    collection_size,
    external_ids,
    populate,
    synthetic_arrays,
)

from service.db import Collection, make_engine, make_session_factory  # noqa: E402
from service.index import BitIndex  # noqa: E402
from service.index_load import load_segment, release_free_memory  # noqa: E402
from service.index_segments import IdStore, Segment  # noqa: E402
from service.index_writer import Changes, SegmentedIndex  # noqa: E402
from service.migrate import upgrade_to_head  # noqa: E402

LONG_BITS = 128
RADII = (1, 2, 3)
LOOKUP_LIMIT = 10_000
QUERIES = 2000
POSTGRES_DATABASE = "semhash_scale"
WARMUP = "scale-warmup"


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def address_bits_for(n: int) -> int:
    """About one document per address (README, "Choosing address_bits")."""
    return max(16, round(np.log2(n)))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def id_store(n: int) -> IdStore:
    ids = external_ids(0, n)
    return IdStore(ids.view(np.uint8).copy(), np.arange(0, ID_BYTES * (n + 1), ID_BYTES, dtype=np.int64))


def build_index(n: int, address_bits: int, kind: str, seed: int) -> tuple[SegmentedIndex, np.ndarray]:
    addresses, codes = synthetic_arrays(n, address_bits, LONG_BITS, kind, seed)
    words = codes.view(np.uint64)
    segment = Segment.build(address_bits, np.arange(1, n + 1, dtype=np.int64), id_store(n), addresses, words)
    return SegmentedIndex(segment), addresses


# --- write -------------------------------------------------------------------------------------------


def bench_write(n: int, seed: int, operations: int) -> dict:
    address_bits = address_bits_for(n)
    writer, _ = build_index(n, address_bits, "uniform", seed)
    rng = np.random.default_rng(seed + 1)
    words = LONG_BITS // 64
    timings: dict[str, list[float]] = {"insert": [], "replace": [], "delete": []}
    victims = rng.choice(np.arange(1, n + 1), 2 * operations, replace=False)
    for step in range(operations):
        kind = ("insert", "replace", "delete")[step % 3]
        if kind == "delete":
            changes = Changes.deletes(victims[step : step + 1], words)
        else:
            row_id = n + 1 + step if kind == "insert" else int(victims[operations + step])
            changes = Changes(
                np.array([row_id], np.int64),
                np.zeros(1, bool),
                [f"w{step:09d}"],
                rng.integers(0, 1 << address_bits, 1, dtype=np.int64).astype(np.uint64),
                rng.integers(0, 1 << 63, (1, words), dtype=np.int64).astype(np.uint64),
            )
        started = time.perf_counter_ns()
        writer.apply(changes)
        timings[kind].append((time.perf_counter_ns() - started) / 1e6)
    every = [value for values in timings.values() for value in values]
    started = time.perf_counter()
    snapshot = writer.snapshot
    base = SegmentedIndex.merge(snapshot)
    merge_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rebased = writer.rebased(base, snapshot)
    rebase_ms = (time.perf_counter() - started) * 1000
    assert len(rebased.snapshot) == len(writer.snapshot)
    result = {
        "address_bits": address_bits,
        "operations": operations,
        "ms_p50": statistics.median(every),
        "ms_p99": percentile(every, 99),
        "ms_p50_by_kind": {kind: statistics.median(values) for kind, values in timings.items()},
        "ms_p99_by_kind": {kind: percentile(values, 99) for kind, values in timings.items()},
        "merge_seconds": merge_seconds,
        "rebase_ms": rebase_ms,
    }
    print(
        f"[write {label(n)}] apply p50 {result['ms_p50']:.4f} ms p99 {result['ms_p99']:.4f} ms; "
        f"merge {merge_seconds:.2f} s",
        flush=True,
    )
    return result


# --- lookup ------------------------------------------------------------------------------------------


def bench_lookups(index: BitIndex, queries: np.ndarray) -> dict:
    result: dict = {"us_p50": {}, "us_p99": {}, "mean_found": {}}
    for radius in RADII:
        for query in queries[:50].tolist():  # warm-up
            index.lookup(query, radius, LOOKUP_LIMIT)
        timings, found = [], []
        for query in queries.tolist():
            started = time.perf_counter_ns()
            shortlist = index.lookup(query, radius, LOOKUP_LIMIT)
            timings.append((time.perf_counter_ns() - started) / 1000)
            found.append(len(shortlist.positions))
        result["us_p50"][f"r{radius}"] = statistics.median(timings)
        result["us_p99"][f"r{radius}"] = percentile(timings, 99)
        result["mean_found"][f"r{radius}"] = float(np.mean(found))
    return result


def lookup_queries(kind: str, addresses: np.ndarray, address_bits: int, seed: int) -> np.ndarray:
    """Uniform: random addresses; clustered: the addresses of random stored documents."""
    rng = np.random.default_rng(seed + 2)
    if kind == "uniform":
        return rng.integers(0, 1 << address_bits, QUERIES, dtype=np.int64)
    return addresses[rng.integers(0, len(addresses), QUERIES)]


def bench_lookup_in_memory(n: int, kind: str, seed: int) -> dict:
    address_bits = address_bits_for(n)
    writer, addresses = build_index(n, address_bits, kind, seed)
    result = bench_lookups(writer.snapshot, lookup_queries(kind, addresses, address_bits, seed))
    result["address_bits"] = address_bits
    result["dense_table"] = writer.snapshot.has_dense_table
    print(f"[lookup {label(n)} {kind}] p50 {result['us_p50']} us, found {result['mean_found']}", flush=True)
    return result


# --- load --------------------------------------------------------------------------------------------


def measure_load(url: str, name: str, lookups: bool, seed: int) -> dict:
    """In a fresh process: load collection `name` as a server does, after a warm-up load (numba's
    compiled code and the driver's buffers are then in place, not counted as index memory)."""
    engine = make_engine(url)
    factory = make_session_factory(engine)

    def load(collection_name: str) -> tuple[SegmentedIndex, float, int]:
        with factory() as session:
            row = session.query(Collection).filter_by(name=collection_name).one()
            started = time.perf_counter()
            segment = load_segment(session, row.id, row.name, row.address_bits, row.long_bits)
            writer = SegmentedIndex(segment)
            return writer, time.perf_counter() - started, row.address_bits

    warm, _, _ = load(WARMUP)
    bench_lookups(warm.snapshot, np.arange(100, dtype=np.int64))
    del warm
    gc.collect()
    release_free_memory()
    before = rss_bytes()
    writer, seconds, address_bits = load(name)
    gc.collect()
    release_free_memory()
    grown = rss_bytes() - before
    n = len(writer.snapshot)
    base = writer.base
    result = {
        "documents": n,
        "address_bits": address_bits,
        "load_seconds": seconds,
        "rss_bytes_per_document": grown / n - ID_BYTES,
        "index_bytes_per_document": (base.nbytes + 4 * n) / n - ID_BYTES,
    }
    if lookups:
        queries = np.random.default_rng(seed + 2).integers(0, 1 << address_bits, QUERIES, dtype=np.int64)
        result["lookup"] = bench_lookups(writer.snapshot, queries)
    engine.dispose()
    return result


def database_url(database: str, scratch: Path, suffix: str = "") -> str:
    """The benchmark's own database (one for the loads, another for the servers, which load every
    collection of theirs)."""
    if database == "sqlite":
        return f"sqlite:///{scratch / f'scale{suffix}.db'}"
    return postgres_database(POSTGRES_DATABASE + suffix)


def ensure_collection(url: str, name: str, n: int, bundle: SyntheticBundle, kind: str, seed: int) -> None:
    engine = make_engine(url)
    try:
        if collection_size(engine, name) != n:
            seconds = populate(engine, name, n, bundle, kind, seed)
            print(f"[populate] {name}: {n} documents in {seconds:.1f} s", flush=True)
    finally:
        engine.dispose()


def synthetic_bundle(address_bits: int) -> SyntheticBundle:
    return SyntheticBundle(f"synthetic-{address_bits}", "synthetic", address_bits, LONG_BITS)


def bench_load(database: str, sizes: list[int], scratch: Path, seed: int, populate_only: bool) -> dict:
    url = database_url(database, scratch)
    upgrade_to_head(url)
    ensure_collection(url, WARMUP, 1000, synthetic_bundle(16), "uniform", seed)
    results = {}
    for n in sizes:
        name = f"scale-uniform-{label(n)}"
        ensure_collection(url, name, n, synthetic_bundle(address_bits_for(n)), "uniform", seed)
        if populate_only:
            continue
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            result = pool.apply(measure_load, (url, name, True, seed))
        print(
            f"[load {label(n)} {database}] {result['load_seconds']:.2f} s, "
            f"{result['rss_bytes_per_document']:.1f} B/doc RSS beyond ids, "
            f"lookup p50 {result['lookup']['us_p50']} us",
            flush=True,
        )
        results[label(n)] = result
    return results


# --- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20k and 100k documents, 5 s mixed load")
    parser.add_argument("--parts", default="write,lookup,load,rest")
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--populate-only", action="store_true", help="fill the databases, measure nothing")
    parser.add_argument("--scratch", type=Path, default=Path("/work/artifacts/index/scale"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/scale.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-seconds", type=float, default=60.0)
    args = parser.parse_args()
    small, large = (20_000, 100_000) if args.quick else (1_000_000, 10_000_000)
    mixed_seconds = 5.0 if args.quick else args.mixed_seconds
    parts = set(args.parts.split(","))
    databases = args.databases.split(",")
    args.scratch.mkdir(parents=True, exist_ok=True)
    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    started = time.time()
    load_before = os.getloadavg()[0]

    def save() -> None:
        results["machine"] = {
            "cpus": os.cpu_count(),
            "command": " ".join(sys.argv),
            "load_average_at_start": load_before,
            "load_average_at_end": os.getloadavg()[0],
            "seconds": time.time() - started,
        }
        # Parts run separately add to one file: keep each run's conditions.
        results.setdefault("machine_by_parts", {})[f"{args.parts} {args.databases}"] = results["machine"]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    if args.populate_only:
        for database in databases:
            if "load" in parts:
                bench_load(database, [small, large], args.scratch, args.seed, True)
            if "rest" in parts:
                from scale_rest import prepare_rest

                prepare_rest(database_url(database, args.scratch, "_rest"), small, args.scratch, args.seed)
        return
    if "write" in parts:
        write = bench_write(small, args.seed, 3000)
        results["write_index_ms_p50"] = {label(small): write["ms_p50"]}
        results["write_index_ms_p99"] = {label(small): write["ms_p99"]}
        results["write_index_detail"] = {label(small): write}
        save()
    if "lookup" in parts:
        detail = {}
        for n in (small, large):
            for kind in ("uniform", "clustered"):
                detail.setdefault(label(n), {})[kind] = bench_lookup_in_memory(n, kind, args.seed)
                gc.collect()
                release_free_memory()
        results["lookup_detail"] = detail
        for statistic in ("us_p50", "us_p99"):
            results[f"lookup_{statistic}"] = {
                size: {**kinds["uniform"][statistic], "clustered": kinds["clustered"][statistic]}
                for size, kinds in detail.items()
            }
        save()
    if "load" in parts:
        for database in databases:
            loaded = bench_load(database, [small, large], args.scratch, args.seed, False)
            results.setdefault("load_detail", {})[database] = loaded
            for size, result in loaded.items():
                results.setdefault("load_seconds", {}).setdefault(size, {})[database] = result["load_seconds"]
                results.setdefault("rss_bytes_per_document_by_database", {}).setdefault(size, {})[
                    database
                ] = result["rss_bytes_per_document"]
                if database == "postgresql" or size not in results.get("rss_bytes_per_document", {}):
                    results.setdefault("rss_bytes_per_document", {})[size] = result["rss_bytes_per_document"]
            save()
    if "rest" in parts:
        from scale_rest import bench_rest

        size = label(small)
        for database in databases:
            url = database_url(database, args.scratch, "_rest")
            rest = bench_rest(url, small, args.scratch, args.seed, mixed_seconds)
            results.setdefault("rest_detail_by_database", {}).setdefault(size, {})[database] = rest
            keys = {
                "rest_upsert_ms_p50": rest["single"]["upsert_ms_p50"],
                "rest_upsert_ms_p99": rest["single"]["upsert_ms_p99"],
                "visible_in_other_process_ms_p50": rest["single"]["visible_ms_p50"],
                "visible_in_other_process_ms_p99": rest["single"]["visible_ms_p99"],
                "rest_upserts_per_s": rest["mixed"]["upserts_per_s"],
                "rest_writes_per_s": rest["mixed"]["writes_per_s"],
                "search_p50_ms_under_writes": rest["mixed"]["search_ms_p50"],
                "search_p99_ms_under_writes": rest["mixed"]["search_ms_p99"],
                "database_commit_ms_p50": rest["database"]["commit_ms_p50"],
                "rest_upserts_per_s_concurrent_writers": rest["mixed_concurrent_writers"]["upserts_per_s"],
                "search_p99_ms_under_concurrent_writes": rest["mixed_concurrent_writers"]["search_ms_p99"],
                "rest_upserts_per_s_paced_searches": rest["mixed_paced_searches"]["upserts_per_s"],
                "search_p99_ms_under_writes_paced_searches": rest["mixed_paced_searches"]["search_ms_p99"],
            }
            for key, value in keys.items():
                results.setdefault(f"{key}_by_database", {}).setdefault(size, {})[database] = value
                if database == "postgresql" or size not in results.get(key, {}):
                    results.setdefault(key, {})[size] = value
            if database == "postgresql":
                results["rest_detail"] = {size: rest}
            lost = results.setdefault("lost_or_stale_by_database", {})
            lost[database] = rest["check"]["lost_or_stale"]
            results["lost_or_stale_documents"] = sum(lost.values())
            save()
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
