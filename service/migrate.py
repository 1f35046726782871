"""Alembic from code: bring a database to head, and tell whether it is there."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


class DatabaseNotAtHeadError(RuntimeError):
    """The database schema is older (or newer) than the code; `semhash migrate` fixes the former."""


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url` that works wherever the package is installed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs may contain it (escaped passwords).
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Run every pending migration."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str | None:
    """The newest revision in `migrations/versions`."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Silence Alembic's INFO lines (its plugins, the dialect) while only reading the revision: the
    server checks it on every /readyz and every job at start, and the lines would say nothing new."""
    loggers = [logging.getLogger(name) for name in ("alembic.runtime.migration", "alembic.runtime.plugins")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as connection, _alembic_quiet():
        return MigrationContext.configure(connection).get_current_revision()


def ensure_at_head(engine: Engine) -> None:
    """Raise `DatabaseNotAtHeadError` with an actionable message unless the schema is at head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseNotAtHeadError(
            f"database {engine.url.render_as_string(hide_password=True)} is at revision {current or 'none'}, "
            f"the code needs {head}: run `semhash migrate` (with the same SEMHASH_DATABASE_URL) first"
        )
