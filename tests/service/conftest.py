"""Fixtures for the service tests: a database URL for SQLite and for PostgreSQL, engines, migrations.

PostgreSQL tests use a database created for this test session (and dropped afterwards); each test
starts from an empty schema. Without a reachable server they skip, unless SEMHASH_REQUIRE_POSTGRES=1
(CI), where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from bundles.text import TextBundle
from service.db import make_engine
from service.main import create_app
from service.migrate import upgrade_to_head
from service.settings import Settings
from training.corpus import Corpus
from training.text_train import train_text_bundle

POSTGRES_SERVER_URL = os.environ.get(
    "SEMHASH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_session_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    admin = make_engine(
        POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as err:
        admin.dispose()
        reason = f"PostgreSQL is unreachable at {POSTGRES_SERVER_URL}: {err.orig}"
        if os.environ.get("SEMHASH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"SEMHASH_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    name = f"semhash_test_{os.getpid()}_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database: a new SQLite file, or the session's PostgreSQL database with a clean schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db')}/semhash.db"
    url: str = request.getfixturevalue("postgres_session_url")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """An empty database at the migration head."""
    upgrade_to_head(database_url)
    return database_url


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_url)
    yield engine
    engine.dispose()


TOPICS = ("space", "hockey", "guns", "medicine")


@pytest.fixture(scope="session")
def topic_corpus() -> Corpus:
    """240 generated documents, 60 per topic, each topic with its own 25 words."""
    rng = np.random.default_rng(0)
    ids, texts, labels = [], [], []
    for topic in TOPICS:
        words = [f"{topic}{i}" for i in range(25)]
        for j in range(60):
            ids.append(f"{topic}-{j}")
            texts.append(" ".join(rng.choice(words, 30)))
            labels.append(topic)
    return Corpus(ids, texts, labels, "generated")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, topic_corpus: Corpus) -> Path:
    """A models directory whose text/ bundle is a tiny model really trained on `topic_corpus`."""
    root = tmp_path_factory.mktemp("models")
    train_text_bundle(topic_corpus, root / "text", profile="tiny", address_bits=16, long_bits=64, seed=0)
    return root


@pytest.fixture(scope="session")
def text_bundle(models_dir: Path) -> TextBundle:
    return TextBundle.load(models_dir / "text")


@pytest.fixture
def make_client(migrated_url: str, models_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Start the app (lifespan included) on the test database; keyword arguments override settings."""
    clients: list[TestClient] = []

    def start(**overrides: object) -> TestClient:
        defaults = {"database_url": migrated_url, "models_dir": models_dir, "index_poll_seconds": 0.2}
        settings = Settings(**{**defaults, **overrides})  # type: ignore[arg-type]
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
