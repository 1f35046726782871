"""The index kernels compile before a server is ready, so a first collection load compiles nothing.

Checked in a fresh interpreter (this process has long compiled everything): after `warm_up()`, a real
cycle against the database (a load, writes and a delete caught up from SQL, searches, a merge) must
not add a compiled signature to any numba kernel of the index. Counting signatures involves no timing.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]

_CYCLE = textwrap.dedent(
    """
    import json, sys
    import numba
    import numpy as np
    from service import index, index_load, index_segments, index_writer
    from service.db import Collection, make_engine, make_session_factory
    from service.index_sync import IndexRegistry
    from service.index_warmup import warm_up
    from service.indexer import IncomingDocument, write_encoded
    from service.store import delete_document

    def signatures():
        kernels = {}
        for module in (index, index_load, index_segments, index_writer):
            for name, value in vars(module).items():
                if isinstance(value, numba.core.dispatcher.Dispatcher):
                    kernels[f"{module.__name__}.{name}"] = sorted(str(s) for s in value.signatures)
        return kernels

    warm_up()
    warmed = signatures()

    engine = make_engine(sys.argv[1])
    sessions = make_session_factory(engine)
    rng = np.random.default_rng(0)

    def write(collection, ids):
        codes = rng.integers(0, 256, (len(ids), 8), dtype=np.uint8)
        documents = [IncomingDocument(i, f"words of {i}", None) for i in ids]
        with sessions() as session:
            addresses = rng.integers(0, 1 << 12, len(ids)).astype(np.uint64)
            write_encoded(session, collection, documents, addresses, codes)
            session.commit()

    with sessions() as session:
        collection = Collection(
            name="warm", bundle_id="b", bundle_fingerprint="f" * 16, address_bits=12, long_bits=64
        )
        session.add(collection)
        session.commit()
    registry = IndexRegistry(sessions)
    registry.sync()  # the load of an empty collection, as a server meets the bulk job's new one
    write(collection, [f"d{i}" for i in range(300)])
    registry.sync()  # caught up from SQL
    registry.merge(collection.id)
    registry.sync()
    registry2 = IndexRegistry(sessions)
    registry2.sync()  # a full load of a filled collection
    write(collection, ["d1", "new"])
    with sessions() as session:
        delete_document(session, collection, "d2")
        session.commit()
    for each in (registry, registry2):
        each.sync()
        entry = each.get("warm")
        assert len(entry.index) == 300, len(entry.index)
        found = entry.index.lookup(int(entry.index.addresses_at(np.array([0]))[0]), 2, 50).positions
        entry.index.external_ids_at(found)
        entry.index.probe([1, 2, 3], 50)
        entry.index.external_ids_at(entry.index.live_positions())
        each.merge(collection.id)
    engine.dispose()
    print(json.dumps({"warmed": warmed, "after": signatures()}))
    """
)


def test_after_warm_up_a_real_load_write_search_and_merge_compile_nothing(
    migrated_url: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CYCLE, migrated_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # Its own numba cache: compiled or read from a cache, a kernel run counts the same, but a
        # fresh folder keeps the test from depending on what earlier runs left there.
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "numba")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    warmed, after = report["warmed"], report["after"]
    assert all(warmed.values()), f"kernels warm_up() never ran: {[k for k, v in warmed.items() if not v]}"
    compiled_later = {name: sorted(set(after[name]) - set(warmed[name])) for name in after}
    assert not any(compiled_later.values()), f"compiled after the warm-up: {compiled_later}"


def test_the_server_warms_the_kernels_before_it_is_ready(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.index_warmup")
    client = make_client()  # on an empty database: no collection whose load would compile them
    assert client.get("/readyz").status_code == 200
    assert any(record.getMessage().startswith("index kernels ready in") for record in caplog.records)
