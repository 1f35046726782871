"""Storage on SQLite and PostgreSQL: migrations, models vs migrations, SQL ball vs BitIndex, sync."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import count

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, func, inspect, select, text, update
from sqlalchemy.exc import DBAPIError

from service.db import Base, Collection, Document, make_engine, make_session_factory
from service.errors import NotFoundError
from service.index_sync import IndexRegistry
from service.migrate import DatabaseNotAtHeadError, alembic_config, ensure_at_head, upgrade_to_head
from service.store import Written, delete_document, purge_tombstones, sql_ball
from service.upsert import IncomingDocument, write_encoded

_names = count()


def add_collection(engine: Engine, address_bits: int, long_bits: int = 64) -> Collection:
    with make_session_factory(engine)() as session:
        collection = Collection(
            name=f"c{next(_names)}",
            bundle_id="test-bundle",
            bundle_fingerprint="f" * 16,
            address_bits=address_bits,
            long_bits=long_bits,
            change_seq=0,
        )
        session.add(collection)
        session.commit()
        return collection


def write(
    engine: Engine, collection: Collection, ids: list[str], addresses: list[int], long_bits: int = 64
) -> Written:
    rng = np.random.default_rng(len(ids))
    long_codes = rng.integers(0, 256, (len(ids), long_bits // 8), dtype=np.uint8)
    documents = [
        IncomingDocument(external_id, f"text of {external_id}", {"n": i}) for i, external_id in enumerate(ids)
    ]
    with make_session_factory(engine)() as session:
        written = write_encoded(
            session, collection, documents, np.array(addresses, dtype=np.uint64), long_codes
        )
        session.commit()
    return written


def test_migrations_upgrade_downgrade_upgrade(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = make_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        command.upgrade(config, "head")
        assert {"collections", "documents"} <= set(inspect(engine).get_table_names())
        ensure_at_head(engine)
    finally:
        engine.dispose()


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_server_check_refuses_a_database_not_at_head(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with pytest.raises(DatabaseNotAtHeadError, match="semhash migrate"):
            ensure_at_head(engine)
        upgrade_to_head(database_url)
        ensure_at_head(engine)
    finally:
        engine.dispose()


def test_upsert_replaces_by_external_id_without_duplicates(engine: Engine) -> None:
    collection = add_collection(engine, 8)
    write(engine, collection, ["a", "b"], [1, 2])
    write(engine, collection, ["b", "c"], [3, 4])
    with make_session_factory(engine)() as session:
        found = {match.external_id: match.address for match in sql_ball(session, collection, 0, 8, 100)}
    assert found == {"a": 1, "b": 3, "c": 4}


def test_written_documents_round_trip_every_field(engine: Engine) -> None:
    collection = add_collection(engine, 12, long_bits=128)
    long_codes = np.arange(48, dtype=np.uint8).reshape(3, 16)
    documents = [
        IncomingDocument("plain", "some text", None),
        IncomingDocument("unicode ü 語", "Zürich — 語 \t tab\nline", {"label": "ü", "tags": ["a", 1, None]}),
        IncomingDocument("nested", "x" * 5000, {"deep": {"list": [1.5, True], "empty": {}}}),
    ]
    sessions = make_session_factory(engine)
    with sessions() as session:
        write_encoded(session, collection, documents, np.array([0, 4095, 7], dtype=np.uint64), long_codes)
        session.commit()
    with sessions() as session:
        rows = {row.external_id: row for row in session.scalars(select(Document))}
        assert set(rows) == {document.external_id for document in documents}
        for document, address, code in zip(documents, [0, 4095, 7], long_codes, strict=True):
            row = rows[document.external_id]
            assert (row.text, row.metadata_, row.address) == (document.text, document.metadata, address)
            assert row.long_code == code.tobytes() and not row.deleted and row.change_seq == 1
        first_created = rows["plain"].created_at
    # Replacing one document rewrites every field and keeps its creation time.
    with sessions() as session:
        replacement = [IncomingDocument("plain", "new text", {"v": 2})]
        write_encoded(session, collection, replacement, np.array([9], dtype=np.uint64), long_codes[2:])
        session.commit()
    with sessions() as session:
        row = session.scalars(select(Document).where(Document.external_id == "plain")).one()
        assert (row.text, row.metadata_, row.address, row.long_code) == (
            "new text",
            {"v": 2},
            9,
            long_codes[2].tobytes(),
        )
        assert row.change_seq == 2 and row.created_at == first_created
        assert session.scalar(select(func.count()).select_from(Document)) == 3


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_driver_error_while_copying_is_a_database_error_and_writes_nothing(engine: Engine) -> None:
    collection = add_collection(engine, 8)
    documents = [IncomingDocument("ok", "fine"), IncomingDocument("bad", "PostgreSQL refuses \x00")]
    codes = np.zeros((2, 8), dtype=np.uint8)
    with make_session_factory(engine)() as session:
        # A SQLAlchemy error, not the driver's own: the service's database error handlers apply to it.
        with pytest.raises(DBAPIError):
            write_encoded(session, collection, documents, np.array([1, 2], dtype=np.uint64), codes)
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Document)) == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    address_bits=st.sampled_from([6, 10, 20]),
    addresses=st.lists(st.integers(0, 2**20 - 1), min_size=0, max_size=60),
    query=st.integers(0, 2**20 - 1),
    radius=st.integers(0, 3),
)
def test_bit_index_and_sql_return_the_same_ball(
    engine: Engine, address_bits: int, addresses: list[int], query: int, radius: int
) -> None:
    mask = (1 << address_bits) - 1
    addresses = [address & mask for address in addresses]
    query &= mask
    collection = add_collection(engine, address_bits)
    write(engine, collection, [f"d{i}" for i in range(len(addresses))], addresses)
    registry = IndexRegistry(make_session_factory(engine))
    registry.sync()
    entry = registry.get(collection.name)
    assert entry is not None
    shortlist = entry.index.lookup(query, radius, 10_000)
    from_index = sorted(
        zip(entry.index.external_ids_at(shortlist.positions), shortlist.distances.tolist(), strict=True)
    )
    with make_session_factory(engine)() as session:
        from_sql = sorted(
            (match.external_id, match.distance)
            for match in sql_ball(session, collection, query, radius, 10_000)
        )
    assert from_index == from_sql


_steps = st.one_of(
    st.dictionaries(st.integers(0, 15), st.integers(0, 63), min_size=1, max_size=5).map(
        lambda b: ("write", b)
    ),
    st.lists(st.integers(0, 15), min_size=1, max_size=3).map(lambda ids: ("delete", ids)),
    st.just(("merge", None)),
)


def assert_index_matches_sql(registry: IndexRegistry, engine: Engine, collection: Collection) -> None:
    """Every ball of a 6-bit collection reads the same documents from the index as from SQL, and the
    lexical index holds exactly the live rows."""
    entry = registry.get(collection.name)
    assert entry is not None
    sessions = make_session_factory(engine)
    for query in range(0, 64, 9):
        for radius in range(3):
            shortlist = entry.index.lookup(query, radius, 10_000)
            ids = entry.index.external_ids_at(shortlist.positions)
            found = zip(ids, shortlist.distances.tolist(), strict=True)
            with sessions() as session:
                expected = [
                    (m.external_id, m.distance) for m in sql_ball(session, collection, query, radius, 10_000)
                ]
            assert sorted(found) == sorted(expected)
    with sessions() as session:
        live = session.scalars(
            select(Document.id).where(Document.collection_id == collection.id, Document.deleted.is_(False))
        )
        assert entry.lexical is not None and sorted(entry.lexical.rows()) == sorted(live)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(_steps, max_size=12), other_writes=st.sets(st.integers(0, 11), max_size=4))
def test_indexes_kept_in_step_by_their_changes_agree_with_sql(
    engine: Engine, script: list, other_writes: set[int]
) -> None:
    collection = add_collection(engine, 6)
    sessions = make_session_factory(engine)
    own = IndexRegistry(sessions)  # takes this process's writes as they commit (apply_written), and merges
    eager = IndexRegistry(sessions)  # reads back every change right after it
    behind = IndexRegistry(sessions)  # syncs once at the end, as a process whose poller fell behind
    for registry in (own, eager, behind):
        registry.sync()
    for position, (step, argument) in enumerate(script):
        # The steps in `other_writes` stand for another process's writes, which `own` learns of only
        # by reading them back (with its next own write, whose sequence then skips ahead).
        taken = eager.apply_written if position in other_writes else own.apply_written
        if step == "write":
            written = write(engine, collection, [f"d{key}" for key in argument], list(argument.values()))
            taken(written)
        elif step == "delete":
            for key in argument:
                with sessions() as session:
                    try:
                        written = delete_document(session, collection, f"d{key}")
                        session.commit()
                        taken(written)
                    except NotFoundError:
                        session.rollback()
        else:
            own.merge(collection.id)
        eager.sync_collection(collection.name)
    own.sync()  # what its poller does: reads back what other processes wrote since its last own write
    behind.sync()
    for registry in (own, eager, behind):
        assert_index_matches_sql(registry, engine, collection)


def test_a_write_of_this_process_goes_into_its_index_without_reading_it_back(engine: Engine) -> None:
    collection = add_collection(engine, 6)
    registry = IndexRegistry(make_session_factory(engine))
    registry.sync()
    statements: list[str] = []

    def record(_connection, _cursor, statement: str, *_args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        registry.apply_written(write(engine, collection, ["a", "b"], [3, 5]))
        assert len(statements) == 2  # the write's change counter and upsert; nothing read back
        with make_session_factory(engine)() as session:
            written = delete_document(session, collection, "a")
            session.commit()
        statements.clear()
        registry.apply_written(written)
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert_index_matches_sql(registry, engine, collection)
    entry = registry.get(collection.name)
    assert entry is not None and entry.change_seq == 2


def wait_until(condition, timeout: float = 60.0) -> float:
    """Seconds until `condition()` held; fails after `timeout`.

    The timeout is a hang detector, not a latency check: on a loaded machine the poller thread can be
    starved for seconds. How fast another process sees a write is measured by benchmarks/scale.py."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_index_follows_writes_from_another_process(migrated_url: str) -> None:
    server_engine = make_engine(migrated_url)
    writer_engine = make_engine(migrated_url)  # stands for the bulk job in another process
    registry = IndexRegistry(make_session_factory(server_engine))
    try:
        collection = add_collection(writer_engine, 10)
        registry.sync()
        registry.start_polling(0.2, tombstone_retention_seconds=3600)

        def ids_at(address: int) -> set[str]:
            entry = registry.get(collection.name)
            if entry is None:
                return set()
            return set(entry.index.external_ids_at(entry.index.lookup(address, 0, 100).positions))

        write(writer_engine, collection, ["x", "y"], [5, 5])
        wait_until(lambda: ids_at(5) == {"x", "y"})
        with make_session_factory(writer_engine)() as session:
            delete_document(session, collection, "x")
            session.commit()
        wait_until(lambda: ids_at(5) == {"y"})
        write(writer_engine, collection, ["y"], [9])  # moved to another address
        wait_until(lambda: ids_at(5) == set() and ids_at(9) == {"y"})
        with make_session_factory(writer_engine)() as session:
            session.delete(session.get(Collection, collection.id))
            session.commit()
        wait_until(lambda: registry.get(collection.name) is None)
    finally:
        registry.stop_polling()
        server_engine.dispose()
        writer_engine.dispose()


def test_a_server_without_collections_finds_the_first_one_another_process_creates(migrated_url: str) -> None:
    server_engine = make_engine(migrated_url)
    writer_engine = make_engine(migrated_url)  # the bulk job, in another process
    registry = IndexRegistry(make_session_factory(server_engine))
    try:
        registry.sync()  # a server started on an empty database
        registry.start_polling(0.2, tombstone_retention_seconds=3600)
        collection = add_collection(writer_engine, 10)
        write(writer_engine, collection, ["x", "y"], [5, 6])
        # Generous: the first load may compile the index kernels in this process (seconds when loaded).
        wait_until(lambda: registry.sizes().get(collection.name) == 2, timeout=120)
        write(writer_engine, collection, ["z"], [7])
        wait_until(lambda: registry.sizes().get(collection.name) == 3, timeout=120)
    finally:
        registry.stop_polling()
        server_engine.dispose()
        writer_engine.dispose()


def test_a_collection_whose_index_cannot_load_holds_up_neither_the_poller_nor_new_collections(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    server_engine = make_engine(migrated_url)
    writer_engine = make_engine(migrated_url)
    registry = IndexRegistry(make_session_factory(server_engine))
    try:
        registry.sync()
        registry.start_polling(0.2, tombstone_retention_seconds=3600)
        # Created with a row no index can hold (a 3-byte long code in a 64-bit collection), in one
        # transaction, so every load of it fails; it comes first in the poller's order.
        with make_session_factory(writer_engine)() as session:
            broken = Collection(
                name="broken", bundle_id="b", bundle_fingerprint="f" * 16, address_bits=8, long_bits=64
            )
            session.add(broken)
            session.flush()
            session.add(
                Document(
                    collection_id=broken.id,
                    external_id="bad",
                    text="t",
                    address=1,
                    long_code=b"abc",
                    change_seq=1,
                )
            )
            broken.change_seq = 1
            session.commit()
        collection = add_collection(writer_engine, 10)
        write(writer_engine, collection, ["x"], [5])
        wait_until(lambda: registry.sizes().get(collection.name) == 1, timeout=120)
        write(writer_engine, collection, ["y"], [6])  # the poller lives on
        wait_until(lambda: registry.sizes().get(collection.name) == 2, timeout=120)
        assert registry.get("broken") is None
        failures = [
            r for r in caplog.records if "could not sync the index of collection 'broken'" in r.getMessage()
        ]
        assert len(failures) == 1, "logged once, not at every poll"
    finally:
        registry.stop_polling()
        server_engine.dispose()
        writer_engine.dispose()


def backdate_tombstone(engine: Engine, external_id: str) -> None:
    with make_session_factory(engine)() as session:
        session.execute(
            update(Document)
            .where(Document.external_id == external_id)
            .values(updated_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
        session.commit()


def test_purge_drops_only_old_tombstones_and_raises_the_watermark(engine: Engine) -> None:
    collection = add_collection(engine, 8)
    write(engine, collection, ["a", "b", "c"], [1, 2, 3])  # change_seq 1
    sessions = make_session_factory(engine)
    with sessions() as session:
        delete_document(session, collection, "a")  # change_seq 2
        delete_document(session, collection, "b")  # change_seq 3
        session.commit()
    backdate_tombstone(engine, "a")
    with sessions() as session:
        assert purge_tombstones(session, datetime.now(UTC) - timedelta(minutes=5)) == 1
        session.commit()
    with sessions() as session:
        left = {row.external_id: row.deleted for row in session.scalars(select(Document))}
        assert left == {"b": True, "c": False}  # b's tombstone is recent: kept
        stored = session.get(Collection, collection.id)
        assert stored is not None and stored.tombstones_purged_seq == 2 and stored.change_seq == 3


def test_an_index_behind_a_purge_reloads_instead_of_missing_the_delete(migrated_url: str) -> None:
    server_engine = make_engine(migrated_url)
    writer_engine = make_engine(migrated_url)  # another process: deletes, then purges right away
    registry = IndexRegistry(make_session_factory(server_engine))
    try:
        collection = add_collection(writer_engine, 8)
        write(writer_engine, collection, ["a", "b"], [1, 2])
        registry.sync()
        with make_session_factory(writer_engine)() as session:
            delete_document(session, collection, "a")
            session.commit()
        with make_session_factory(writer_engine)() as session:
            assert purge_tombstones(session, datetime.now(UTC) + timedelta(days=1)) == 1
            session.commit()
        # The tombstone of "a" is gone before this index saw it: only the watermark tells.
        registry.sync()
        entry = registry.get(collection.name)
        assert entry is not None and entry.index.external_ids_at(entry.index.live_positions()) == ["b"]
    finally:
        server_engine.dispose()
        writer_engine.dispose()


def test_the_poller_purges_old_tombstones(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    registry = IndexRegistry(make_session_factory(engine))
    try:
        collection = add_collection(engine, 8)
        write(engine, collection, ["a", "b"], [1, 2])
        with make_session_factory(engine)() as session:
            delete_document(session, collection, "a")
            session.commit()
        backdate_tombstone(engine, "a")
        registry.start_polling(0.1, tombstone_retention_seconds=60)

        def rows() -> set[str]:
            with make_session_factory(engine)() as session:
                return set(session.scalars(select(Document.external_id)))

        wait_until(lambda: rows() == {"b"})
    finally:
        registry.stop_polling()
        engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_backend_pid()")))


def _terminate(url: str, pid: int) -> None:
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        while connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}):
            time.sleep(0.01)
    admin.dispose()


@pytest.mark.postgres
def test_a_pooled_connection_idle_past_the_threshold_is_pinged_and_replaced(
    postgres_session_url: str,
) -> None:
    engine = make_engine(postgres_session_url, ping_after_idle_seconds=0.0)
    first = _backend_pid(engine)
    _terminate(postgres_session_url, first)
    assert _backend_pid(engine) != first  # the checkout's ping found it dead: a new connection
    engine.dispose()


@pytest.mark.postgres
def test_a_pooled_connection_used_moments_ago_is_not_pinged(postgres_session_url: str) -> None:
    # No round trip before the first statement: a connection cut since its last use fails that
    # statement once (a 503 in the API), and the pool then reconnects.
    engine = make_engine(postgres_session_url, ping_after_idle_seconds=3600.0)
    first = _backend_pid(engine)
    _terminate(postgres_session_url, first)
    with pytest.raises(DBAPIError) as failed:
        _backend_pid(engine)
    assert failed.value.connection_invalidated
    assert _backend_pid(engine) != first
    engine.dispose()


def test_a_delete_is_one_statement_on_postgresql_and_a_missing_document_leaves_the_counter(
    engine: Engine,
) -> None:
    collection = add_collection(engine, 6)
    write(engine, collection, ["a"], [3])
    statements: list[str] = []

    def record(_connection, _cursor, statement: str, *_args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with make_session_factory(engine)() as session:
            written = delete_document(session, collection, "a")
            session.commit()
        assert len(statements) == (1 if engine.dialect.name == "postgresql" else 2)
        with make_session_factory(engine)() as session, pytest.raises(NotFoundError):
            delete_document(session, collection, "a")  # already a tombstone
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert written.batch.newest_seq == 2
    with make_session_factory(engine)() as session:
        assert session.scalar(select(Collection.change_seq).where(Collection.id == collection.id)) == 2
        deleted = session.scalar(select(Document.deleted).where(Document.external_id == "a"))
        assert deleted is True
