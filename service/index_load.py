"""Reading a collection's index rows from SQL: the whole collection (fast, with progress) or its changes.

A full load streams (row id, external id, address, long code) of the live rows into flat arrays, never
one Python object per document: PostgreSQL sends them by `COPY ... TO STDOUT (FORMAT BINARY)`, parsed
by a compiled loop over the raw protocol messages; SQLite's rows are fetched in blocks and converted a
block at a time. Then one `Segment.build` groups them by cell. Progress goes to the log.
"""

from __future__ import annotations

import ctypes
import logging
import select
import time
from collections.abc import Iterator

import numba
import numpy as np
import psycopg
from psycopg import pq
from sqlalchemy import BigInteger, Integer, and_, bindparam, func
from sqlalchemy import select as sql_select
from sqlalchemy.orm import Session

from service.codes import long_codes_to_words, stored_codes_to_words
from service.db import Collection, Document, psycopg_connection, sqlite_connection
from service.index_segments import IdStore, Segment
from service.index_writer import ChangeBatch, Changes

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 5.0
_COPY_BLOCK_BYTES = 8 << 20  # parse the protocol messages in blocks of about this size
_SQLITE_BLOCK_ROWS = 65_536
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_LIVE_ROWS = "SELECT id, external_id, address, long_code FROM documents WHERE collection_id = {} AND {}"
# Smallest binary tuple: field count, four lengths, two int8, a 1-byte id and an empty code.
_MIN_TUPLE_BYTES = 2 + 4 * 4 + 8 + 8 + 1


class IndexLoadError(RuntimeError):
    """A stored row cannot go into the index (a long code of the wrong width, an address too wide)."""


@numba.njit(cache=True, nogil=True)
def _big_endian(buffer: np.ndarray, position: int, width: int) -> int:
    value = 0
    for i in range(width):
        value = (value << 8) | int(buffer[position + i])
    return value


@numba.njit(cache=True, nogil=True)
def _parse_copy_block(
    buffer: np.ndarray,
    position: int,
    code_bytes: int,
    row_ids: np.ndarray,
    addresses: np.ndarray,
    codes: np.ndarray,
    id_data: np.ndarray,
    id_offsets: np.ndarray,
) -> tuple[int, int, int]:
    """Parse whole binary COPY tuples (int8 id, text external id, int8 address, bytea code) from
    buffer[position:] into the output arrays. Returns (position after the last whole tuple, tuples
    parsed, status): status 1 when the trailer was read, 0 when more input is needed, -1 for a tuple
    of another shape, -2 for a long code of the wrong width."""
    rows = 0
    id_offsets[0] = 0
    end = buffer.shape[0]
    while position + 2 <= end:
        fields = _big_endian(buffer, position, 2)
        if fields == 0xFFFF:
            return position + 2, rows, 1
        if fields != 4:
            return position, rows, -1
        cursor = position + 2
        if cursor + 12 > end:
            break
        if _big_endian(buffer, cursor, 4) != 8:
            return position, rows, -1
        row_id = _big_endian(buffer, cursor + 4, 8)
        cursor += 12
        if cursor + 4 > end:
            break
        id_length = _big_endian(buffer, cursor, 4)
        if id_length > 0x7FFFFFFF:
            return position, rows, -1
        cursor += 4
        if cursor + id_length + 16 > end:
            break
        id_start = cursor
        cursor += id_length
        if _big_endian(buffer, cursor, 4) != 8:
            return position, rows, -1
        address = _big_endian(buffer, cursor + 4, 8)
        cursor += 12
        code_length = _big_endian(buffer, cursor, 4)
        if code_length != code_bytes:
            return position, rows, -2
        cursor += 4
        if cursor + code_bytes > end:
            break
        row_ids[rows] = row_id
        addresses[rows] = address
        codes[rows, :] = buffer[cursor : cursor + code_bytes]
        start = id_offsets[rows]
        id_data[start : start + id_length] = buffer[id_start : id_start + id_length]
        id_offsets[rows + 1] = start + id_length
        rows += 1
        position = cursor + code_bytes
    return position, rows, 0


def _copy_messages(connection: psycopg.Connection, statement: str) -> Iterator[bytes]:
    """The raw CopyData messages of `COPY ... TO STDOUT`, read straight from libpq, to the end.

    psycopg's `Copy.read()` costs about 5 us a message (one per row) through its generator machinery;
    this loop costs about 2 us, and waits on the socket with the GIL released. It reads the command's
    final result too, as `Copy.read()` does once the data is over.
    """
    with connection.cursor() as cursor, cursor.copy(statement):
        pgconn = connection.pgconn
        while True:
            size, data = pgconn.get_copy_data(1)
            if size > 0:
                yield bytes(data)
            elif size == 0:
                select.select([pgconn.socket], [], [])
                pgconn.consume_input()
            else:
                break
        while True:
            while pgconn.is_busy():
                select.select([pgconn.socket], [], [])
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return
            if result.status != pq.ExecStatus.COMMAND_OK:
                message = (result.error_message or b"").decode(errors="replace")
                raise psycopg.OperationalError(f"COPY failed: {message}")


class _Progress:
    def __init__(self, name: str, total: int) -> None:
        self.name, self.total = name, total
        self.started = self.logged = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.logged >= PROGRESS_SECONDS:
            self.logged = now
            logger.info(
                "loading collection %r: %d of about %d documents (%.0f s)",
                self.name,
                done,
                self.total,
                now - self.started,
            )

    def done(self, count: int) -> None:
        seconds = time.monotonic() - self.started
        rate = count / seconds if seconds > 0 else 0.0
        logger.info(
            "loaded collection %r: %d documents in %.1f s (%.0f docs/s)", self.name, count, seconds, rate
        )


class _Blocks:
    """Per-block arrays of a load, concatenated once at the end."""

    def __init__(self) -> None:
        self.row_ids: list[np.ndarray] = []
        self.addresses: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.ids: list[IdStore] = []
        self.count = 0

    def add(self, row_ids: np.ndarray, addresses: np.ndarray, codes: np.ndarray, ids: IdStore) -> None:
        self.row_ids.append(row_ids)
        self.addresses.append(addresses)
        self.codes.append(codes)
        self.ids.append(ids)
        self.count += len(row_ids)

    def segment(self, address_bits: int, code_bytes: int) -> Segment:
        if not self.row_ids:
            self.add(
                np.zeros(0, np.int64),
                np.zeros(0, np.int64),
                np.zeros((0, code_bytes), np.uint8),
                IdStore.from_strings([]),
            )
        row_ids = np.concatenate(self.row_ids)
        addresses = np.concatenate(self.addresses)
        if len(addresses) and (int(addresses.min()) < 0 or int(addresses.max()) >> address_bits):
            raise IndexLoadError(f"a stored address does not fit in {address_bits} bits")
        long_words = long_codes_to_words(np.concatenate(self.codes))
        ids = IdStore.concat(self.ids)
        self.row_ids = self.addresses = self.codes = []
        self.ids = []
        return Segment.build(address_bits, row_ids, ids, addresses, long_words)


def _load_postgres(session: Session, collection_id: int, code_bytes: int, progress: _Progress) -> _Blocks:
    connection = psycopg_connection(session)
    statement = f"COPY ({_LIVE_ROWS.format(int(collection_id), 'NOT deleted')}) TO STDOUT (FORMAT BINARY)"
    blocks = _Blocks()
    pending: list[bytes] = []
    pending_bytes = 0
    leftover = b""
    header_read = finished = False
    messages = _copy_messages(connection, statement)
    while not finished:
        message = next(messages, None)
        if message is not None:
            pending.append(message)
            pending_bytes += len(message)
            if pending_bytes < _COPY_BLOCK_BYTES:
                continue
        elif not pending:
            raise IndexLoadError("COPY ended before its trailer")
        data = leftover + b"".join(pending)
        pending, pending_bytes = [], 0
        start = 0
        if not header_read:
            if not data.startswith(_COPY_SIGNATURE):
                raise IndexLoadError("COPY did not send the binary signature")
            start = len(_COPY_SIGNATURE) + 8 + int.from_bytes(data[15:19], "big")
            header_read = True
        position, status, parsed = parse_copy_data(data, start, code_bytes)
        if parsed is None:
            problem = "a long code of another width" if status == -2 else "a row of another shape"
            raise IndexLoadError(f"collection {collection_id} holds {problem} than {code_bytes}-byte codes")
        blocks.add(*parsed)
        progress.update(blocks.count)
        leftover = data[position:]
        finished = status == 1
    for _ in messages:  # nothing follows the trailer but the end of the command
        raise IndexLoadError("COPY sent data after its trailer")
    return blocks


ParsedRows = tuple[np.ndarray, np.ndarray, np.ndarray, IdStore]


def parse_copy_data(data: bytes, start: int, code_bytes: int) -> tuple[int, int, ParsedRows | None]:
    """Parse the whole rows of binary COPY `data` from byte `start` (`_parse_copy_block`).

    Returns (position after the last whole row, status: 0 more to come / 1 trailer read / < 0 a bad
    row, (row ids, addresses, codes, external ids) or None when the status is < 0).
    """
    capacity = len(data) // _MIN_TUPLE_BYTES + 1
    row_ids = np.empty(capacity, np.int64)
    addresses = np.empty(capacity, np.int64)
    codes = np.empty((capacity, code_bytes), np.uint8)
    id_data = np.empty(len(data), np.uint8)
    id_offsets = np.empty(capacity + 1, np.int64)
    position, rows, status = _parse_copy_block(
        np.frombuffer(data, np.uint8), start, code_bytes, row_ids, addresses, codes, id_data, id_offsets
    )
    if status < 0:
        return position, status, None
    ids = IdStore(id_data[: id_offsets[rows]].copy(), id_offsets[: rows + 1].copy())
    return position, status, (row_ids[:rows].copy(), addresses[:rows].copy(), codes[:rows].copy(), ids)


def _load_sqlite(session: Session, collection_id: int, code_bytes: int, progress: _Progress) -> _Blocks:
    cursor = sqlite_connection(session).cursor()
    cursor.execute(_LIVE_ROWS.format(int(collection_id), "deleted = 0"))
    blocks = _Blocks()
    while rows := cursor.fetchmany(_SQLITE_BLOCK_ROWS):
        row_ids, external_ids, addresses, codes = zip(*rows, strict=True)
        packed = b"".join(codes)
        if len(packed) != len(rows) * code_bytes or any(len(code) != code_bytes for code in codes):
            raise IndexLoadError(
                f"collection {collection_id} holds a long code that is not {code_bytes} bytes"
            )
        blocks.add(
            np.array(row_ids, np.int64),
            np.array(addresses, np.int64),
            np.frombuffer(packed, np.uint8).reshape(len(rows), code_bytes),
            IdStore.from_strings(external_ids),
        )
        progress.update(blocks.count)
    cursor.close()
    return blocks


def load_segment(
    session: Session, collection_id: int, name: str, address_bits: int, long_bits: int
) -> Segment:
    """Every live document of the collection, as one base segment (progress in the log)."""
    total = session.scalar(
        sql_select(func.count()).where(Document.collection_id == collection_id, Document.deleted.is_(False))
    )
    progress = _Progress(name, int(total or 0))
    code_bytes = (long_bits + 7) // 8
    dialect = session.get_bind().dialect.name
    load = _load_postgres if dialect == "postgresql" else _load_sqlite
    blocks = load(session, collection_id, code_bytes, progress)
    count = blocks.count
    segment = blocks.segment(address_bits, code_bytes)
    release_free_memory()
    progress.done(count)
    return segment


_DOCUMENTS = Document.__table__.c
_COLLECTIONS = Collection.__table__.c
# One statement, so one snapshot: the collection's purge watermark and the rows changed after a sequence
# (the watermark on a row of its own, with NULL document columns, when none changed). A purge that
# committed before the snapshot shows in the watermark; one after it removed nothing this read missed.
# Core columns and bound parameters, built once: this runs after every write.
_CHANGES = (
    sql_select(
        _COLLECTIONS.tombstones_purged_seq,
        _DOCUMENTS.id,
        _DOCUMENTS.external_id,
        _DOCUMENTS.address,
        _DOCUMENTS.long_code,
        _DOCUMENTS.deleted,
        _DOCUMENTS.change_seq,
        _DOCUMENTS.text,
    )
    .select_from(Collection.__table__)
    .outerjoin(
        Document.__table__,
        and_(
            _DOCUMENTS.collection_id == _COLLECTIONS.id,
            _DOCUMENTS.change_seq > bindparam("after_seq", type_=BigInteger),
        ),
    )
    .where(_COLLECTIONS.id == bindparam("collection_id", type_=Integer))
)


def read_changes(
    session: Session, collection_id: int, after_seq: int, long_bits: int
) -> tuple[ChangeBatch, int]:
    """Rows stamped with a change sequence above `after_seq` (upserts and tombstones; `newest_seq` is
    `after_seq` when none), and the collection's tombstone purge watermark read in the same snapshot
    (0 if the collection is gone)."""
    result = session.connection().execute(_CHANGES, {"collection_id": collection_id, "after_seq": after_seq})
    everything = result.all()
    watermark = int(everything[0][0] or 0) if everything else 0
    rows = [row[1:] for row in everything if row[1] is not None]
    if not rows:
        nothing = Changes.deletes(np.zeros(0, np.int64), (long_bits + 63) // 64)
        return ChangeBatch(nothing, [], after_seq), watermark
    row_ids, external_ids, addresses, codes, deleted, seqs, texts = zip(*rows, strict=True)
    changes = Changes(
        np.array(row_ids, np.int64),
        np.array(deleted, bool),
        list(external_ids),
        np.array(addresses, np.uint64),
        stored_codes_to_words(codes, long_bits),
    )
    return ChangeBatch(changes, list(texts), max(after_seq, *seqs)), watermark


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS after a big load or merge (glibc keeps them otherwise,
    and the process's memory would look as large as its peak)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do
