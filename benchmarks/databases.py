"""PostgreSQL databases of the benchmarks' own, on the server at SEMHASH_BENCH_POSTGRES_URL.

A benchmark never writes into a database someone else uses: it takes a fresh one, dropped afterwards
(`fresh_postgres_database`), or, for data that takes long to load and is reused across runs, one of a
fixed name of its own, created the first time (`postgres_database`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from service.db import make_engine, scratch_postgres_database

POSTGRES_SERVER_URL = os.environ.get(
    "SEMHASH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def fresh_postgres_database(server_url: str = POSTGRES_SERVER_URL) -> Iterator[str]:
    """The URL of a new, empty database on `server_url`'s server, dropped afterwards."""
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with scratch_postgres_database(admin, "semhash_bench") as url:
            yield url
    finally:
        admin.dispose()


def postgres_database(name: str, server_url: str = POSTGRES_SERVER_URL) -> str:
    """The URL of database `name` on `server_url`'s server, created (empty) if it does not exist; kept."""
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name})
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        return admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin.dispose()
