"""Synthetic collections for benchmarks/scale.py, written straight into the documents table.

Codes: `uniform` draws every address bit and long-code byte at random; `clustered` draws one address
per cluster (CLUSTER_SIZE documents each) and flips each of its bits with CLUSTER_FLIP_PROBABILITY for
each member, as the codes of documents on one topic share most of their bits. Long codes are uniform
in both (the index never reads them; only reranking does). External ids are `d` + 9 digits, 10 bytes.

Rows go in without the API: PostgreSQL by one `COPY ... FROM STDIN (FORMAT BINARY)` whose tuples, all
of one size, are laid out by a numpy structured array; SQLite by `executemany` in blocks. The two
non-unique indexes are dropped for the insert and built again afterwards (a sort, not 10 million
random B-tree inserts).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, select, text

from service.db import Collection

CLUSTER_SIZE = 256
CLUSTER_FLIP_PROBABILITY = 0.04
CHUNK = 1 << 20
ID_BYTES = 10
SECONDARY_INDEXES = {
    "ix_documents_collection_id_address": "documents (collection_id, address)",
    "ix_documents_collection_id_change_seq": "documents (collection_id, change_seq)",
}


@dataclass(frozen=True)
class SyntheticBundle:
    """What a collection records of its model (service.store.CodingBundle), for collections the
    benchmark fills itself."""

    bundle_id: str
    fingerprint: str
    address_bits: int
    long_bits: int


def external_ids(start: int, count: int) -> np.ndarray:
    """(count,) S10 ids d000000000, d000000001, ... from `start`."""
    numbers = np.arange(start, start + count, dtype=np.int64)
    digits = np.empty((count, ID_BYTES), np.uint8)
    digits[:, 0] = ord("d")
    for position in range(ID_BYTES - 1, 0, -1):
        digits[:, position] = ord("0") + numbers % 10
        numbers //= 10
    return digits.view(f"S{ID_BYTES}").ravel()


def synthetic_chunks(
    n: int, address_bits: int, long_bits: int, kind: str, seed: int, chunk: int = CHUNK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(addresses (m,) int64, long codes (m, long_bits / 8) uint8) for n documents, a chunk at a time."""
    rng = np.random.default_rng(seed)
    code_bytes = (long_bits + 7) // 8
    centers = rng.integers(0, 1 << address_bits, max(1, n // CLUSTER_SIZE), dtype=np.int64)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        if kind == "uniform":
            addresses = rng.integers(0, 1 << address_bits, m, dtype=np.int64)
        elif kind == "clustered":
            addresses = centers[rng.integers(0, len(centers), m)]
            for bit in range(address_bits):
                addresses ^= (rng.random(m) < CLUSTER_FLIP_PROBABILITY).astype(np.int64) << bit
        else:
            raise ValueError(f"unknown kind {kind!r}")
        yield addresses, rng.integers(0, 256, (m, code_bytes), dtype=np.uint8)


def synthetic_arrays(n: int, address_bits: int, long_bits: int, kind: str, seed: int):
    """All of `synthetic_chunks` at once."""
    parts = list(synthetic_chunks(n, address_bits, long_bits, kind, seed))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def collection_size(engine: Engine, name: str) -> int | None:
    """Live documents of collection `name`, None if there is no such collection."""
    with engine.connect() as connection:
        collection_id = connection.scalar(select(Collection.id).where(Collection.name == name))
        if collection_id is None:
            return None
        return connection.scalar(
            text("SELECT count(*) FROM documents WHERE collection_id = :c AND NOT deleted"),
            {"c": collection_id},
        )


def _copy_tuples(row_ids, collection_id, ids, addresses, codes) -> bytes:
    """Binary COPY tuples of (id, collection_id, external_id, text, address, long_code, deleted,
    change_seq), all of one size."""
    m, code_bytes = codes.shape
    layout = np.dtype(
        [
            ("fields", ">i2"),
            ("l_id", ">i4"), ("id", ">i8"),
            ("l_collection", ">i4"), ("collection", ">i4"),
            ("l_external", ">i4"), ("external", f"S{ID_BYTES}"),
            ("l_text", ">i4"),
            ("l_address", ">i4"), ("address", ">i8"),
            ("l_code", ">i4"), ("code", np.uint8, (code_bytes,)),
            ("l_deleted", ">i4"), ("deleted", np.uint8),
            ("l_seq", ">i4"), ("seq", ">i8"),
        ]
    )  # fmt: skip
    rows = np.zeros(m, layout)
    rows["fields"] = 8
    rows["l_id"], rows["id"] = 8, row_ids
    rows["l_collection"], rows["collection"] = 4, collection_id
    rows["l_external"], rows["external"] = ID_BYTES, ids
    rows["l_text"] = 0  # an empty string, not NULL
    rows["l_address"], rows["address"] = 8, addresses
    rows["l_code"], rows["code"] = code_bytes, codes
    rows["l_deleted"], rows["deleted"] = 1, 0
    rows["l_seq"], rows["seq"] = 8, 1
    return rows.tobytes()


def _new_collection(connection, name: str, bundle: SyntheticBundle) -> int:
    return connection.execute(
        text(
            "INSERT INTO collections (name, bundle_id, bundle_fingerprint, address_bits, long_bits, "
            "change_seq, tombstones_purged_seq) VALUES (:n, :b, :f, :a, :l, 1, 0) RETURNING id"
        ),
        {
            "n": name,
            "b": bundle.bundle_id,
            "f": bundle.fingerprint,
            "a": bundle.address_bits,
            "l": bundle.long_bits,
        },
    ).scalar_one()


def populate(engine: Engine, name: str, n: int, bundle: SyntheticBundle, kind: str, seed: int) -> float:
    """Create collection `name` holding n synthetic documents (replacing one of that name); seconds taken."""
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM documents WHERE collection_id IN (SELECT id FROM collections WHERE name = :n)"),
            {"n": name},
        )
        connection.execute(text("DELETE FROM collections WHERE name = :n"), {"n": name})
        collection_id = _new_collection(connection, name, bundle)
        first = (connection.scalar(text("SELECT max(id) FROM documents")) or 0) + 1
        for index in SECONDARY_INDEXES:
            connection.execute(text(f"DROP INDEX IF EXISTS {index}"))
        chunks = synthetic_chunks(n, bundle.address_bits, bundle.long_bits, kind, seed)
        raw = connection.connection.driver_connection
        if engine.dialect.name == "postgresql":
            _copy_postgres(raw, collection_id, first, chunks)
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('documents', 'id'), :last)"), {"last": first + n}
            )
        else:
            _insert_sqlite(raw, collection_id, first, chunks)
        for index, columns in SECONDARY_INDEXES.items():
            connection.execute(text(f"CREATE INDEX {index} ON {columns}"))
    with engine.connect() as connection:
        connection.execute(text("ANALYZE documents"))
        connection.commit()
    return time.perf_counter() - started


def _copy_postgres(raw, collection_id: int, first: int, chunks) -> None:
    statement = (
        "COPY documents (id, collection_id, external_id, text, address, long_code, deleted, change_seq) "
        "FROM STDIN (FORMAT BINARY)"
    )
    with raw.cursor() as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
        with cursor.copy(statement) as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
            done = 0
            for addresses, codes in chunks:
                m = len(addresses)
                row_ids = np.arange(first + done, first + done + m, dtype=np.int64)
                copy.write(_copy_tuples(row_ids, collection_id, external_ids(done, m), addresses, codes))
                done += m
            copy.write(b"\xff\xff")


def _insert_sqlite(raw: sqlite3.Connection, collection_id: int, first: int, chunks) -> None:
    raw.execute("PRAGMA cache_size = -1000000")
    done = 0
    for addresses, codes in chunks:
        m = len(addresses)
        ids = [item.decode() for item in external_ids(done, m).tolist()]
        code_bytes = codes.shape[1]
        packed = codes.tobytes()
        rows = (
            (
                first + done + i,
                collection_id,
                ids[i],
                "",
                address,
                packed[i * code_bytes : (i + 1) * code_bytes],
            )
            for i, address in enumerate(addresses.tolist())
        )
        raw.executemany(
            "INSERT INTO documents (id, collection_id, external_id, text, address, long_code, deleted, "
            "change_seq) VALUES (?, ?, ?, ?, ?, ?, 0, 1)",
            rows,
        )
        done += m
