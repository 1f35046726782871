"""The bit-indexed table: SQLAlchemy 2.0 models, engines and sessions (SQLite or PostgreSQL).

Change tracking for the in-memory indexes: every write transaction bumps its collection's
`change_seq` first (an UPDATE, so it holds the collection row's lock until commit) and stamps the rows
it writes with the new value. Writers to one collection are therefore serialised and their sequence
numbers become visible in commit order, so a poller that has seen `change_seq = s` and then reads
every row with `change_seq > s` misses nothing, whichever process wrote it. Deletes are tombstones
(`deleted = true`, text and metadata cleared) so pollers can see them. Tombstones older than a
retention period are purged; `tombstones_purged_seq` records the newest purged sequence, so a poller
that was further behind than that knows it may have missed a delete and reloads the collection.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    if TYPE_CHECKING:  # as DeclarativeBase declares it, narrowed: every model here maps a plain Table
        __table__: ClassVar[Table]


class Collection(Base):
    """A named set of documents, all hashed by one model bundle."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    bundle_id: Mapped[str] = mapped_column(String(128))
    bundle_fingerprint: Mapped[str] = mapped_column(String(128))
    address_bits: Mapped[int] = mapped_column(Integer)
    long_bits: Mapped[int] = mapped_column(Integer)
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The newest change_seq among the tombstones purged so far (see `service.store.purge_tombstones`).
    tombstones_purged_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    documents: Mapped[list[Document]] = relationship(
        back_populates="collection", cascade="all, delete-orphan", passive_deletes=True
    )


class Document(Base):
    """One document: its external id, text, metadata, address and long code."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id", name="uq_documents_collection_id_external_id"),
        Index("ix_documents_collection_id_address", "collection_id", "address"),
        Index("ix_documents_collection_id_change_seq", "collection_id", "change_seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)
    address: Mapped[int] = mapped_column(BigInteger)
    long_code: Mapped[bytes] = mapped_column(LargeBinary)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    change_seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    collection: Mapped[Collection] = relationship(back_populates="documents")


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the bulk job writes; busy_timeout makes writers wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# A pooled server connection idle for longer than this is pinged before it is handed out (see
# `ping_idle_connections`).
PING_AFTER_IDLE_SECONDS = 1.0


def ping_idle_connections(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Ping a pooled connection at checkout only when it has been idle for more than `idle_seconds`,
    and replace it if the ping fails.

    SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip to the database before every
    request's first statement, a third of a single-document write's. A connection in use moments ago
    is known good; one idle for a while may have been cut (a database restart, a proxy's timeout), and
    that is what the ping is for. A connection that dies between two uses less than `idle_seconds`
    apart fails its statement instead (an unreachable database: 503 with Retry-After), and SQLAlchemy
    then drops every pooled connection older than the failure, so the next requests reconnect.
    """

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in", float("-inf")) <= idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping runs (outside a transaction)
        except Exception as err:  # the pool replaces the connection and retries the checkout
            raise DisconnectionError(f"pooled connection failed its ping: {err}") from err

    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checkout)


def make_engine(
    database_url: str, ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS, **kwargs: Any
) -> Engine:
    """An engine for `database_url`; SQLite connections get WAL and foreign keys switched on, server
    connections are pinged when they come out of the pool after being idle (`ping_idle_connections`)."""
    if database_url.startswith("postgresql://"):
        # The plain scheme would pick psycopg2, which is not installed; psycopg 3 is.
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    if database_url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    engine = create_engine(database_url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    elif not kwargs.get("pool_pre_ping"):
        ping_idle_connections(engine, ping_after_idle_seconds)
    return engine


def psycopg_connection(session: Session) -> psycopg.Connection[Any]:
    """The psycopg connection under `session`'s (PostgreSQL), for what SQLAlchemy does not do: COPY."""
    connection = session.connection().connection.driver_connection
    if not isinstance(connection, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection, got {type(connection).__name__}")
    return connection


def sqlite_connection(session: Session) -> sqlite3.Connection:
    """The sqlite3 connection under `session`'s (SQLite), for reading rows without SQLAlchemy's cost."""
    connection = session.connection().connection.driver_connection
    if not isinstance(connection, sqlite3.Connection):
        raise TypeError(f"expected a sqlite3 connection, got {type(connection).__name__}")
    return connection


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (responses are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def scratch_postgres_database(admin: Engine, prefix: str) -> Iterator[str]:
    """A new, empty database on `admin`'s PostgreSQL server (an AUTOCOMMIT engine), dropped afterwards.

    Yields its URL. For tests and benchmarks, which must never write into a database someone uses.
    """
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
