"""Short queries (issue 10): what people type, against the indexed 20 Newsgroups training split.

Queries: the subject lines of the test split (at least 3 words, "Re:" stripped; `--queries` of them
drawn at random, seeded), and a second set, the first sentence of each test document's body (quoted
lines and "In article ... writes:" skipped; 3+ words, cut at 25), to check that choices hold beyond
subject lines. Relevant = same newsgroup.

Database: the training split indexed with its headers by `semhash index` (the bulk indexer, as a user
runs it) into a fresh SQLite file, served by `semhash serve` (uvicorn, one process) on loopback; every
search mode is a real `POST /v1/collections/20news/search` over HTTP (httpx, one keep-alive client),
so it takes the API's code path, defaults and refusals. Per mode:

* `p_at_10`, `p_at_100`: relevant hits among the first 10 (a `limit` 10 request) and 100 (a `limit` 100
  request, the mode's shortlist raised to 100 when smaller), over every query; an empty slot and a
  refused query count as misses;
* `fraction_touched`: mean of the response's `touched` over the collection size;
* `refused_fraction`: share of queries answered with an error (422: nothing the model can search);
* `no_result_fraction`, `precision_of_returned` (P@10 over the slots that hold a result);
* `rest_p50_ms`: median wall time of the `limit` 10 requests, one client, measured at the client
  (`server_took_ms_p50`: the median of the route's own `took_ms`).

Baselines in the same run, over the whole collection, in process (same queries, same documents with
headers, every non-stop word): `bm25_exhaustive` (the service's BM25, k1 1.2, b 0.75) and
`tfidf_exhaustive` (sublinear tf, smooth idf, cosine). Documents with score 0 are not returned.

Modes that need a request field the running service does not have (read from its OpenAPI schema) are
skipped and listed under `skipped_modes`. `--mode NAME='{"radius": 3}'` adds a mode.

`--split validation` holds out 10% of the training split (by id hash), indexes the rest and takes the
queries from the held-out documents: for choosing defaults without looking at the test split. Give it a
bundle trained with `semhash train text --test-fraction 0.1` (the same id hash), which never saw them.

Also `document_queries`: P@100 of the bundle's document encoder on whole test documents (128-bit long
code and 20-bit address, Hamming ranking), next to the published text_20news.json figures.

    python benchmarks/short_queries.py run --bundle /work/artifacts/quick/text
    python benchmarks/short_queries.py run --bundle B --split validation --out /tmp/validation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from served import link_models, server  # noqa: E402
from short_query_sets import (  # noqa: E402
    draw_queries,
    first_sentence_query,
    precision,
    subject_query,
    validation_split,
)

from training.corpus import Corpus, load_corpus  # noqa: E402

RESULTS = REPO / "benchmarks/results"
COLLECTION = "20news"

# name -> request fields besides `text` and `limit`. A `radius` asks for a Hamming ball; without one, text
# queries are multi-probed where the service does that (`probes`).
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "hamming_r2": {"rerank": "hamming", "radius": 2},
    "hamming_r3_tfidf_s300": {"rerank": "tfidf", "radius": 3, "shortlist": 300},
    "hamming": {"rerank": "hamming"},
    "hamming_query_encoder": {"rerank": "hamming", "encoder": "query"},
    "hamming_document_encoder": {"rerank": "hamming", "encoder": "document"},
    "bm25_code_shortlist": {"rerank": "bm25", "lexical_candidates": 0},
    "bm25": {"rerank": "bm25"},
    "fused_code_shortlist": {"rerank": "fused", "lexical_candidates": 0},
    "fused": {"rerank": "fused"},
    "fused_query_encoder": {"rerank": "fused", "encoder": "query"},
    "fused_document_encoder": {"rerank": "fused", "encoder": "document"},
    "fused_probes_1024": {"rerank": "fused", "probes": 1024},
    "fused_r3": {"rerank": "fused", "radius": 3},
}

log = logging.getLogger("short_queries")


# ----- the service --------------------------------------------------------------------------------
def bulk_index(database: Corpus, bundle: Path, scratch: Path) -> str:
    """`semhash index` of `database` (written as .jsonl) into a fresh SQLite file; its URL."""
    source = scratch / "database.jsonl"
    with source.open("w") as out:
        for external_id, text, label in zip(database.ids, database.texts, database.labels, strict=True):
            out.write(json.dumps({"id": external_id, "text": text, "label": label}) + "\n")
    url = f"sqlite:///{scratch / 'short_queries.db'}"
    semhash = Path(sys.executable).with_name("semhash")
    subprocess.run([str(semhash), "migrate", "--database-url", url], check=True, capture_output=True)
    command = [
        str(semhash),
        "index",
        "--collection",
        COLLECTION,
        "--input",
        str(source),
        "--bundle",
        str(bundle),
        "--database-url",
        url,
        "--no-progress",
        "--workers",
        "0",
    ]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    log.info(
        "indexed %d documents in %.0f s: %s",
        len(database),
        time.perf_counter() - started,
        finished.stderr.strip().splitlines()[-1] if finished.stderr.strip() else "",
    )
    return url


class Server:
    """`semhash serve` on loopback over `url`, with `bundle` as its text model, and an HTTP client."""

    def __init__(self, bundle: Path, url: str, scratch: Path, port: int):
        self.models = link_models(scratch / "models", {"text": bundle})
        self.url, self.port, self.log = url, port, scratch / "server.log"
        self._stack = ExitStack()

    def __enter__(self) -> Server:
        import httpx

        log = self._stack.enter_context(open(self.log, "w"))
        running = self._stack.enter_context(
            server(models=self.models, database_url=self.url, port=self.port, workers=1, stderr=log)
        )
        self.client = self._stack.enter_context(httpx.Client(base_url=running.base, timeout=60))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def search_fields(self) -> set[str]:
        schema = self.client.get("/openapi.json").json()
        return set(schema["components"]["schemas"]["SearchRequest"]["properties"])

    def search(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        started = time.perf_counter()
        response = self.client.post(f"/v1/collections/{COLLECTION}/search", json=body)
        elapsed = time.perf_counter() - started
        if response.status_code >= 500:
            raise RuntimeError(f"search answered {response.status_code}: {response.text[:300]}")
        return response.status_code, response.json(), elapsed


# ----- metrics ------------------------------------------------------------------------------------
def run_mode(
    server: Server,
    fields: dict[str, Any],
    queries: list[str],
    labels: list[str],
    label_of: dict[str, str],
    collection_size: int,
) -> dict[str, Any]:
    ranked: dict[int, list[list[str]]] = {10: [], 100: []}
    touched, latencies, took, refused = [], [], [], 0
    for limit in (10, 100):
        body_fields = dict(fields)
        if limit == 100 and body_fields.get("shortlist", limit) < limit:
            body_fields["shortlist"] = limit
        for query in queries:
            status, answer, elapsed = server.search({"text": query, "limit": limit, **body_fields})
            if status != 200:
                ranked[limit].append([])
                refused += limit == 10
                continue
            ranked[limit].append([label_of[hit["id"]] for hit in answer["data"]])
            if limit == 10:
                latencies.append(elapsed)
                touched.append(answer["touched"])
                took.append(answer["took_ms"])
    p10, returned10 = precision(ranked[10], labels, 10)
    return {
        "p_at_10": p10,
        "p_at_100": precision(ranked[100], labels, 100)[0],
        "fraction_touched": float(np.mean(touched) / collection_size) if touched else 0.0,
        "refused_fraction": refused / len(queries),
        "no_result_fraction": sum(not hits for hits in ranked[10]) / len(queries),
        "precision_of_returned": returned10,
        "rest_p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "server_took_ms_p50": statistics.median(took) if took else None,  # the route's own `took_ms`
    }


def exhaustive_baselines(
    database: Corpus, queries: list[str], labels: list[str]
) -> dict[str, dict[str, Any]]:
    """BM25 and sublinear TF-IDF over every document and every non-stop word."""
    from sklearn.feature_extraction.text import TfidfTransformer

    from training.text_baselines import bm25_database, full_vocabulary

    vocabulary = full_vocabulary(database.texts, queries)
    weighting = TfidfTransformer(sublinear_tf=True).fit(vocabulary.database_counts)
    scorers = {
        "bm25_exhaustive": (vocabulary.query_counts, bm25_database(vocabulary.database_counts).T.tocsr()),
        "tfidf_exhaustive": (
            weighting.transform(vocabulary.query_counts),
            weighting.transform(vocabulary.database_counts).T.tocsr(),
        ),
    }
    results = {}
    for name, (query_matrix, database_t) in scorers.items():
        ranked, timings = [], []
        for row in range(len(queries)):
            started = time.perf_counter()
            scores = np.asarray((query_matrix[row] @ database_t).todense()).ravel()
            top = np.argsort(-scores, kind="stable")[:100]
            top = top[scores[top] > 0]
            timings.append(time.perf_counter() - started)
            ranked.append([database.labels[i] for i in top])
        p10, returned10 = precision(ranked, labels, 10)
        results[name] = {
            "p_at_10": p10,
            "p_at_100": precision(ranked, labels, 100)[0],
            "fraction_touched": 1.0,
            "refused_fraction": 0.0,
            "no_result_fraction": sum(not hits for hits in ranked) / len(queries),
            "precision_of_returned": returned10,
            "rest_p50_ms": None,
            "server_took_ms_p50": None,
            "in_process_p50_ms": statistics.median(timings) * 1000,
        }
        log.info("%s: P@10 %.3f, P@100 %.3f", name, p10, results[name]["p_at_100"])
    return results


def document_queries(bundle_dir: Path, train: Corpus, test: Corpus) -> dict[str, Any]:
    """P@100 of whole test documents against the training documents by the bundle's document codes."""
    from bundles.text import TextBundle
    from training.retrieval import Relevance, hamming_relevant_at

    bundle = TextBundle.load(bundle_dir)
    keep = {
        name: np.flatnonzero(np.asarray(bundle.counts(c.texts).sum(axis=1)).ravel() > 0)
        for name, c in (("train", train), ("test", test))
    }
    relevance = Relevance.from_labels(
        [(test.labels[i],) for i in keep["test"]], [(train.labels[i],) for i in keep["train"]]
    )
    out: dict[str, Any] = {}
    for code in ("long", "address"):
        bits = {
            name: bundle.code_bits(code, bundle.counts([c.texts[i] for i in keep[name]]))
            for name, c in (("train", train), ("test", test))
        }
        relevant = hamming_relevant_at(bits["test"], bits["train"], relevance, [100])
        out[f"p_at_100_{bits['train'].shape[1]}_bits"] = float(relevant.mean() / 100)
    published = json.loads((RESULTS / "text_20news.json").read_text())["precision_at_100"]["semantic_hashing"]
    out["published_text_20news_json"] = {
        "p_at_100_32_bits": published["32"],
        "p_at_100_128_bits": published["128"],
    }
    return out


# ----- run ----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    train = load_corpus("20news", "train")
    if args.split == "validation":
        database, query_source = validation_split(train)
    else:
        database, query_source = train, load_corpus("20news", "test")
    label_of = dict(zip(database.ids, database.labels, strict=True))
    query_sets = {
        "subject": draw_queries(query_source, subject_query, args.queries, args.seed),
        "first_sentence": draw_queries(query_source, first_sentence_query, args.queries, args.seed),
    }
    modes = dict(MODES)
    for extra in args.mode:
        name, _, fields = extra.partition("=")
        modes[name] = json.loads(fields)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        url = bulk_index(database, args.bundle, scratch)
        with Server(args.bundle, url, scratch, args.port) as server:
            known = server.search_fields()
            skipped = {
                name: sorted(set(fields) - known) for name, fields in modes.items() if set(fields) - known
            }
            for name in skipped:
                log.info("mode %s skipped: the service has no field %s", name, skipped[name])
            run_modes = {name: fields for name, fields in modes.items() if name not in skipped}
            server.search({"text": query_sets["subject"][0][0], "limit": 10})  # warm-up (loads the index)
            for set_name, (queries, labels) in query_sets.items():
                per_mode = {}
                for name, fields in run_modes.items():
                    per_mode[name] = run_mode(server, fields, queries, labels, label_of, len(database))
                    m = per_mode[name]
                    log.info(
                        "[%s] %s: P@10 %.3f P@100 %.3f touched %.4f refused %.3f p50 %.2f ms",
                        set_name,
                        name,
                        m["p_at_10"],
                        m["p_at_100"],
                        m["fraction_touched"],
                        m["refused_fraction"],
                        m["rest_p50_ms"] or float("nan"),
                    )
                per_mode.update(exhaustive_baselines(database, queries, labels))
                results[set_name] = {"queries": len(queries), "examples": queries[:5], "modes": per_mode}
    subject = results["subject"]["modes"]
    metrics = (
        "p_at_10",
        "p_at_100",
        "fraction_touched",
        "refused_fraction",
        "no_result_fraction",
        "precision_of_returned",
        "rest_p50_ms",
        "server_took_ms_p50",
    )
    from bundles.text import TextBundle

    bundle = TextBundle.load(args.bundle)
    return {
        "queries": results["subject"]["queries"],
        **{metric: {name: mode[metric] for name, mode in subject.items()} for metric in metrics},
        "modes": {name: modes.get(name, "in-process baseline over the whole collection") for name in subject},
        "skipped_modes": skipped,
        "first_sentence": results["first_sentence"],
        "subject_examples": results["subject"]["examples"],
        "document_queries": document_queries(args.bundle, train, load_corpus("20news", "test"))
        if args.split == "test"
        else None,
        "bundle": {
            "path": str(args.bundle),
            "bundle_id": bundle.bundle_id,
            "profile": bundle.config.get("training", {}).get("profile"),
            "has_query_encoder": bundle.has_query_encoder,
            # A bundle trained on all of the training split has seen the validation queries' documents
            # (train it with `--test-fraction 0.1` for a clean validation split: the same id hash).
            "trained_documents": bundle.config.get("corpus", {}).get("documents"),
        },
        "protocol": {
            "split": args.split,
            "database_documents": len(database),
            "seed": args.seed,
            "limit": 10,
            "relevance": "same newsgroup",
            "documents": "raw messages with headers, indexed by `semhash index`",
            "search": "POST /v1/collections/20news/search over HTTP, `semhash serve` (1 worker), 1 client",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
            "command": " ".join(["python", *sys.argv]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("run", help="index, serve, query every mode, write the JSON")
    command.add_argument("--bundle", type=Path, default=REPO / "artifacts/text", help="text bundle directory")
    command.add_argument("--split", choices=("test", "validation"), default="test")
    command.add_argument("--queries", type=int, default=400)
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--port", type=int, default=8791)
    command.add_argument("--mode", action="append", default=[], help="NAME=JSON request fields (repeatable)")
    command.add_argument(
        "--out", type=Path, default=None, help="default: results/short_queries.json (test split)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    out = args.out or (
        RESULTS / ("short_queries.json" if args.split == "test" else "short_queries_validation.json")
    )
    result = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
