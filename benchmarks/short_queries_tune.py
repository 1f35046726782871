"""Choose the `/search` defaults on the VALIDATION split of the 20 Newsgroups training documents.

The training split's documents minus a held-out 10% (by id hash, `short_query_sets.validation_split`)
are indexed; the held-out documents' subject lines (and first sentences) are the queries; relevance is
the same newsgroup, `limit` 10 and 100 (empty slots are misses). Every setting is searched through
`service.search_request.run_search`, the function the `/search` route calls, in this process (no
HTTP: latency is `benchmarks/short_queries.py`'s job). The test split is never read.

    python benchmarks/short_queries_tune.py --database sqlite:///DB --bundle artifacts/quick/text \
        --out benchmarks/results/short_queries_tuning.json

DB: a database holding the indexed validation collection `20news` (what `short_queries.py run
--split validation` builds); `--setting NAME=JSON` adds settings to the grid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from short_query_sets import (  # noqa: E402
    draw_queries,
    first_sentence_query,
    precision,
    subject_query,
    validation_split,
)

from service.errors import InvalidInputError  # noqa: E402
from service.main import create_app  # noqa: E402
from service.schemas import SearchRequest  # noqa: E402
from service.search_request import run_search  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.corpus import load_corpus  # noqa: E402

GRID: dict[str, dict[str, Any]] = {
    "defaults": {},  # whatever service.schemas says now
    "w1_p256_s100_l300": {"code_weight": 1.0, "probes": 256, "shortlist": 100, "lexical_candidates": 300},
    "w2_p256_s100_l300": {"code_weight": 2.0, "probes": 256, "shortlist": 100, "lexical_candidates": 300},
    "w2_p1024_s100_l300": {"code_weight": 2.0, "probes": 1024, "shortlist": 100, "lexical_candidates": 300},
    "w2_p256_s300_l300": {"code_weight": 2.0, "probes": 256, "shortlist": 300, "lexical_candidates": 300},
    "w2_p1024_s300_l300": {"code_weight": 2.0, "probes": 1024, "shortlist": 300, "lexical_candidates": 300},
    "w1.5_p1024_s300_l300": {"code_weight": 1.5, "probes": 1024, "shortlist": 300, "lexical_candidates": 300},
    "w3_p1024_s300_l300": {"code_weight": 3.0, "probes": 1024, "shortlist": 300, "lexical_candidates": 300},
    "w2_p1024_s300_l200": {"code_weight": 2.0, "probes": 1024, "shortlist": 300, "lexical_candidates": 200},
    "w2_p1024_s300_l500": {"code_weight": 2.0, "probes": 1024, "shortlist": 300, "lexical_candidates": 500},
    "w2_p4096_s300_l300": {"code_weight": 2.0, "probes": 4096, "shortlist": 300, "lexical_candidates": 300},
}


def measure(
    search, queries: list[str], labels: list[str], label_of: dict[str, str], size: int, fields
) -> dict:
    ranked: dict[int, list[list[str]]] = {10: [], 100: []}
    touched, refused = [], 0
    for limit in (10, 100):
        body = dict(fields)
        if limit == 100 and body.get("shortlist", limit) < limit:
            body["shortlist"] = limit
        for query in queries:
            try:
                answer = search(SearchRequest(text=query, limit=limit, **body))
            except InvalidInputError:
                ranked[limit].append([])
                refused += limit == 10
                continue
            ranked[limit].append([label_of[hit.id] for hit in answer.data])
            if limit == 10:
                touched.append(answer.touched / size)
    return {
        "p_at_10": precision(ranked[10], labels, 10)[0],
        "p_at_100": precision(ranked[100], labels, 100)[0],
        "fraction_touched": sum(touched) / max(len(touched), 1),
        "refused_fraction": refused / len(queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database", required=True, help="SQLAlchemy URL of the indexed validation collection"
    )
    parser.add_argument("--bundle", type=Path, required=True, help="the text bundle it was indexed with")
    parser.add_argument("--collection", default="20news")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setting", action="append", default=[], help="NAME=JSON request fields")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    grid = dict(GRID)
    for item in args.setting:
        name, fields = item.split("=", 1)
        grid[name] = json.loads(fields)
    database, held_out = validation_split(load_corpus("20news", "train"))
    label_of = dict(zip(database.ids, database.labels, strict=True))
    sets = {
        "subject": draw_queries(held_out, subject_query, args.queries, args.seed),
        "first_sentence": draw_queries(held_out, first_sentence_query, args.queries, args.seed),
    }
    models = args.out.parent / "tune_models"
    models.mkdir(parents=True, exist_ok=True)
    if not (models / "text").exists():
        (models / "text").symlink_to(args.bundle.resolve())
    settings = Settings(database_url=args.database, models_dir=models, log_requests=False)
    from fastapi.testclient import TestClient

    results: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        collection = state.index_registry.get(args.collection)
        size = len(collection.index)

        def search(request: SearchRequest):
            return run_search(request, collection, state.models.text, state.session_factory, state.settings)

        for set_name, (queries, labels) in sets.items():
            for name, fields in grid.items():
                m = measure(search, queries, labels, label_of, size, fields)
                results.setdefault(set_name, {})[name] = {"fields": fields, **m}
                print(set_name, name, json.dumps(m), flush=True)  # noqa: T201
    out = {
        "protocol": {
            "split": "validation (10% of the 20news training split by id hash held out as queries)",
            "database_documents": size,
            "queries": args.queries,
            "seed": args.seed,
            "relevance": "same newsgroup",
            "search": "service.search_request.run_search (the /search route's code path), in process",
            "bundle": str(args.bundle),
        },
        **results,
    }
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
