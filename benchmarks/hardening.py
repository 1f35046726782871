"""Hardening benchmark (issue 9): schemathesis on both backends, /healthz under image load, a hostile-image
battery with the server's peak memory, and repeated test runs beside a CPU-heavy process.

Every part runs a real server (`semhash serve`, uvicorn) on a fresh database and talks HTTP to it.

    python benchmarks/hardening.py --models /work/artifacts/quick --out benchmarks/results/hardening.json
    python benchmarks/hardening.py --parts schemathesis --backends sqlite   # one part, one backend
    python benchmarks/hardening.py --parts suite --suite-runs 10 --suite-append   # 10 more repeats

Writes the keys the issue names: schemathesis.{sqlite,postgresql}.{server_errors,schema_violations,cases},
healthz_p99_ms.{idle,image_load}, hostile_images.{server_errors,max_rss_mb},
suite_repeats_under_load.{passed,runs}, with what was run beside each number.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "service"), str(ROOT / "tests")]
import served  # noqa: E402  (benchmarks/, beside this script)
from databases import fresh_postgres_database  # noqa: E402
from test_hostile_images import HOSTILE  # noqa: E402  (the battery the tests use, generated with Pillow)

POSTGRES_URL = os.environ.get(
    "SEMHASH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FAILURE_LINE = re.compile(r"(ST\d{3}) ([^:\n]+): (\d+)")
# ST101/ST102 are server errors (counted from the responses); ST103-ST111 are responses that break the
# OpenAPI document: undocumented status or content type, missing headers, body against the schema.
RESPONSE_FAULTS = tuple(f"ST1{n:02d}" for n in range(3, 12))
IMAGE_ROUTES = ("/v1/digits/recognize", "/v1/images/encode")


def models_with_every_kind(base: Path, out: Path) -> Path:
    """`out`: the bundles of `base`, plus tiny sparse, motor and predictive bundles trained here on
    generated MNIST-like digits for the kinds `base` lacks, so every route is served (robustness is what
    is measured, not accuracy)."""
    from dataclasses import replace

    from mnist_like import mnist_like, tiny_motor_config, tiny_sparse_config

    from training.motor import train_motor
    from training.predict import PROFILES as PREDICT_PROFILES
    from training.predict import train_predictive
    from training.sparse_train import train_sparse

    out.mkdir(parents=True, exist_ok=True)
    trainers = {
        "sparse": lambda splits, path: train_sparse(tiny_sparse_config(), splits, path, progress=False),
        "motor": lambda splits, path: train_motor(tiny_motor_config(), splits, path, progress=False),
        "predictive": lambda splits, path: train_predictive(
            replace(PREDICT_PROFILES["tiny"], device="cpu"), splits, path, progress=False
        ),
    }
    splits = None
    for kind in ("text", "digits", "images", "sparse", "motor", "predictive"):
        target = out / kind
        if target.exists():
            continue
        if (base / kind).exists():
            target.symlink_to((base / kind).resolve())
        elif kind in trainers:
            splits = splits or mnist_like()
            trainers[kind](splits, target)
    return out


@contextlib.contextmanager
def database(backend: str, scratch: Path) -> Iterator[str]:
    """A fresh, migrated database URL for `backend`."""
    if backend == "sqlite":
        url = f"sqlite:///{scratch}/bench-{secrets.token_hex(4)}.db"
        served.migrate(url, quiet=False)
        yield url
        return
    with fresh_postgres_database(POSTGRES_URL) as url:
        served.migrate(url, quiet=False)
        yield url


@contextlib.contextmanager
def server(models: Path, url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`semhash serve` on a free port; yields (base URL, process) once /readyz answers 200."""
    with served.server(models=models, database_url=url, stdout=None, cwd=ROOT, ready_seconds=180) as running:
        yield running.base, running.process


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found.extend(below)
        todo.extend(below)
    return found


def peak_rss_mb(pid: int) -> list[float]:
    """Peak resident memory so far (VmHWM), in MB, of the process and of every process under it (the image
    decoding workers and their fork server), the process first. Their sum bounds their peak together
    (from above: pages the workers share with the fork server count in each)."""
    peaks = []
    for process in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(round(int(line.split()[1]) / 1024, 1))
    return peaks


# ----- schemathesis ----------------------------------------------------------------------------------
def run_schemathesis(models: Path, backend: str, scratch: Path, examples: int, seed: int) -> dict:
    with database(backend, scratch) as url, server(models, url) as (base, _process):
        for name in ("c", "news"):  # a collection to find, besides the random names
            httpx.post(f"{base}/v1/collections", json={"name": name}, timeout=30)
        har = scratch / f"schemathesis-{backend}.har"
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(examples),
            "--seed",
            str(seed),
            "--continue-on-failure",
            "--no-color",
            "--request-timeout",
            "60",
            "--report",
            "har",
            "--report-har-path",
            str(har),
        ]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        seconds = time.perf_counter() - started
    output = completed.stdout + completed.stderr
    (scratch / f"schemathesis-{backend}.txt").write_text(output)
    # Every request and response schemathesis sent and got (HAR), so server errors are counted exactly.
    statuses: Counter[str] = Counter(
        str(entry["response"]["status"]) for entry in json.loads(har.read_text())["log"]["entries"]
    )
    # Its failure summary: unique failures per kind (ST code). ST1xx are the response's own faults.
    failures = {f"{code} {title}": int(count) for code, title, count in FAILURE_LINE.findall(output)}
    generated = re.search(r"(\d+) generated", output)
    return {
        "server_errors": sum(count for status, count in statuses.items() if status.startswith("5")),
        "schema_violations": sum(
            count for name, count in failures.items() if name.startswith(RESPONSE_FAULTS)
        ),
        "cases": int(generated.group(1)) if generated else sum(statuses.values()),
        "responses": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "unique_failures": failures,
        "exit_code": completed.returncode,
        "seconds": round(seconds, 1),
    }


# ----- /healthz under image load ---------------------------------------------------------------------
def big_digit_png(side: int, seed: int) -> bytes:
    """A side x side PNG of one drawn stroke: compresses well, decodes to side^2 pixels."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (side, side), 255)
    x = int(rng.integers(side // 3, 2 * side // 3))
    ImageDraw.Draw(image).line([(x, side // 5), (x, 4 * side // 5)], fill=0, width=max(4, side // 20))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def max_size_batch(max_body: int, side: int, distinct: int = 8) -> list[tuple[str, tuple[str, bytes, str]]]:
    """As many side x side PNGs (`distinct` different ones, repeated) as fit in a body of `max_body` bytes."""
    pngs = [big_digit_png(side, seed) for seed in range(distinct)]
    files, size = [], 0
    while size + len(pngs[len(files) % distinct]) + 300 <= max_body:
        data = pngs[len(files) % distinct]
        files.append(("files", (f"{len(files)}.png", data, "image/png")))
        size += len(data) + 300
    return files


def healthz_p99(base: str, requests: int) -> tuple[float, float]:
    """(p99, p50) of /healthz latency in ms over `requests` sequential requests."""
    latencies = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(requests):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(latencies, 99)), float(np.percentile(latencies, 50))


def run_healthz(models: Path, scratch: Path, requests: int, clients: int, side: int) -> dict:
    max_body = 8 * 1024 * 1024
    files = max_size_batch(max_body, side)
    with database("sqlite", scratch) as url, server(models, url) as (base, _process):
        idle_p99, idle_p50 = healthz_p99(base, requests)
        stop = threading.Event()
        statuses: Counter[int] = Counter()
        lock = threading.Lock()

        def post_batches() -> None:
            with httpx.Client(base_url=base, timeout=300) as client:
                while not stop.is_set():
                    try:
                        status = client.post("/v1/digits/recognize", files=files).status_code
                    except httpx.TimeoutException:
                        status = 0  # no answer within the client's timeout (counted as "0")
                    except httpx.TransportError:
                        break  # the server was stopped with this batch still decoding
                    with lock:
                        statuses[status] += 1
                    if status == 429:
                        time.sleep(0.2)

        threads = [threading.Thread(target=post_batches) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # let the decoders fill up
        started = time.perf_counter()
        load_p99, load_p50 = healthz_p99(base, requests)
        load_seconds = time.perf_counter() - started
        stop.set()
        # Leaving the block stops the server: batches still decoding need not be waited for.
    for thread in threads:
        thread.join()
    return {
        "idle": round(idle_p99, 2),
        "image_load": round(load_p99, 2),
        "p50_ms": {"idle": round(idle_p50, 2), "image_load": round(load_p50, 2)},
        "load": {
            "clients": clients,
            "images_per_request": len(files),
            "image_side": side,
            "request_bytes": sum(len(item[1][1]) for item in files),
            "image_responses": {str(k): v for k, v in sorted(statuses.items())},
            "healthz_requests": requests,
            "healthz_seconds": round(load_seconds, 1),
        },
    }


# ----- hostile images --------------------------------------------------------------------------------
def run_hostile_images(models: Path, scratch: Path, rounds: int) -> dict:
    battery = {name: make() for name, make in HOSTILE.items()}
    statuses: Counter[str] = Counter()
    with database("sqlite", scratch) as url, server(models, url) as (base, process):
        with httpx.Client(base_url=base, timeout=600) as client:
            for _ in range(rounds):
                for route in IMAGE_ROUTES:
                    for name, data in battery.items():
                        response = client.post(route, files={"file": (f"{name}.png", data, "image/png")})
                        statuses[str(response.status_code)] += 1
                    everything = [("files", (f"{n}.png", d, "image/png")) for n, d in battery.items()]
                    statuses[str(client.post(route, files=everything).status_code)] += 1
        rss = peak_rss_mb(process.pid)
    return {
        "server_errors": sum(v for k, v in statuses.items() if not (k == "200" or k.startswith("4"))),
        "max_rss_mb": round(sum(rss), 1),
        "max_rss_mb_by_process": rss,
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "files": sorted(battery),
    }


# ----- repeated test runs beside a CPU-heavy process -------------------------------------------------
# The subprocess, signal and decode-pool tests: the ones a loaded machine could upset.
SUITE_TESTS = [
    "tests/service/test_bulk_index.py",
    "tests/service/test_hostile_input.py::test_semhash_index_bad_input_is_one_line_and_exit_3",
    "tests/service/test_hostile_input.py::test_semhash_index_keeps_committed_batches_when_the_database_goes_away",
    "tests/service/test_hostile_images.py::test_a_full_decode_pool_answers_429_with_retry_after_and_health_stays_up",
    "tests/service/test_hostile_images.py::test_images_decode_in_worker_processes_at_a_lower_priority",
    "tests/service/test_hostile_images.py::test_a_worker_that_dies_fails_its_request_with_503_and_is_replaced",
    "tests/service/test_hostile_images.py::test_a_killed_server_leaves_no_decoding_worker_behind",
]


def code_commit() -> str:
    """The last commit that changed the code under test (anything outside benchmarks/), "+changes" when
    the working tree differs from it there."""
    outside = ["--", ".", ":!benchmarks"]
    head = subprocess.run(
        ["git", "log", "-1", "--format=%h", *outside], capture_output=True, text=True, cwd=ROOT
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", *outside], capture_output=True, cwd=ROOT
    )
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def run_suite_repeats(
    runs: int, tests: list[str], logs: Path, previous: dict | None, save: Callable[[dict], None]
) -> dict:
    """`runs` runs of pytest on `tests` beside a CPU burner, added to `previous` (the entry of earlier runs
    of the same tests at the same `code_commit`, or None). The entry is saved after each run, so a series that
    is stopped keeps the runs it finished; the whole output of a failed run goes to `logs`."""
    commit = code_commit()
    entry = {"passed": 0, "runs": 0, "tests": tests, "commit": commit, "seconds_per_run": [], "failures": []}
    if previous is not None:
        if (previous.get("tests"), previous.get("commit")) != (tests, commit):
            sys.exit(
                f"--suite-append: the earlier runs are of other tests or commit ({previous.get('commit')})"
            )
        entry = previous
    burner = subprocess.Popen([sys.executable, "-c", "while True: sum(i * i for i in range(10**6))"])
    try:
        for _ in range(runs):
            run = entry["runs"] + 1
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            entry["seconds_per_run"].append(round(time.perf_counter() - started, 1))
            entry["runs"] = run
            entry["passed"] += result.returncode == 0
            lines = result.stdout.strip().splitlines()
            summary = lines[-1] if lines else "(no output)"
            failed = [line for line in lines if line.startswith("FAILED ")]  # -rf: which test, and why
            entry["failures"].extend(f"run {run}: {line}" for line in failed)
            if result.returncode != 0:
                logs.mkdir(parents=True, exist_ok=True)
                log = logs / f"suite-{commit}-run{run}.txt"
                log.write_text(result.stdout + result.stderr)
                entry["failures"].append(f"run {run}: exit {result.returncode}, output in {log}")
            print(
                f"run {run}: {summary} ({entry['seconds_per_run'][-1]} s)",
                *failed,
                sep="\n",
                file=sys.stderr,
                flush=True,
            )
            save(entry)
    finally:
        burner.kill()
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=ROOT / "artifacts")
    parser.add_argument(
        "--serve-models",
        type=Path,
        default=ROOT / "artifacts" / "hardening-models",
        help="Where the served models are gathered (tiny bundles are trained there for missing kinds).",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hardening.json")
    parser.add_argument("--parts", default="schemathesis,healthz,hostile,suite")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--examples", type=int, default=100, help="schemathesis examples per operation")
    parser.add_argument("--keep", help="Keep the databases and schemathesis logs in this folder.")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--healthz-requests", type=int, default=500)
    parser.add_argument("--image-side", type=int, default=2048)
    parser.add_argument("--hostile-rounds", type=int, default=3)
    parser.add_argument("--suite-runs", type=int, default=20)
    parser.add_argument("--suite-tests", default=",".join(SUITE_TESTS), help="Comma-separated pytest ids.")
    parser.add_argument(
        "--suite-append",
        action="store_true",
        help="Add these runs to those already in --out (same tests, same commit): a long series in parts.",
    )
    parser.add_argument(
        "--suite-logs", type=Path, default=ROOT / "artifacts" / "hardening-suite", help="Failed runs' output."
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    # Only schemathesis needs every route served (tiny bundles trained for the kinds --models lacks).
    every_kind = models_with_every_kind(args.models, args.serve_models) if "schemathesis" in parts else None
    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(args.keep) if args.keep else Path(scratch_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        if "schemathesis" in parts:
            for backend in args.backends.split(","):
                entry = run_schemathesis(every_kind, backend, scratch, args.examples, args.seed)
                results.setdefault("schemathesis", {})[backend] = entry
                print(
                    backend,
                    {k: entry[k] for k in ("server_errors", "schema_violations", "cases")},
                    flush=True,
                )
            results["schemathesis"]["settings"] = {
                "checks": "all",
                "max_examples": args.examples,
                "seed": args.seed,
            }
        if "healthz" in parts:
            results["healthz_p99_ms"] = run_healthz(
                args.models, scratch, args.healthz_requests, 4, args.image_side
            )
            print("healthz", results["healthz_p99_ms"], flush=True)
        if "hostile" in parts:
            results["hostile_images"] = run_hostile_images(args.models, scratch, args.hostile_rounds)
            print("hostile", results["hostile_images"], flush=True)
        if "suite" in parts:
            previous = results.get("suite_repeats_under_load") if args.suite_append else None

            def save(entry: dict) -> None:
                write_results(args.out, {**results, "suite_repeats_under_load": entry})

            results["suite_repeats_under_load"] = run_suite_repeats(
                args.suite_runs, args.suite_tests.split(","), args.suite_logs, previous, save
            )
            print("suite", results["suite_repeats_under_load"], flush=True)
    write_results(args.out, results)


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
