"""`semhash serve|index|migrate`: the service-side commands."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from service.settings import Settings

logger = logging.getLogger(__name__)

# `semhash index` exit codes (2 is click's own, for a bad command line).
EXIT_BAD_INPUT = 3  # the input, the bundle or the collection is wrong: fix it, then rerun
EXIT_DATABASE_UNAVAILABLE = 4  # the database went away or is busy: rerun when it is back
EXIT_STOPPED_BY_SIGNAL = 128  # + the signal's number: 130 on Ctrl-C (SIGINT), 143 on SIGTERM

DATABASE_URL_HELP = "SQLAlchemy database URL (default: SEMHASH_DATABASE_URL, else sqlite:///./semhash.db)."


def _settings(database_url: str | None) -> Settings:
    # Imported here so `semhash train ...` does not pay for FastAPI and SQLAlchemy at start-up.
    from service.settings import get_settings

    settings = get_settings()
    return settings if database_url is None else settings.model_copy(update={"database_url": database_url})


def migrate(database_url: str | None = typer.Option(None, "--database-url", help=DATABASE_URL_HELP)) -> None:
    """Bring the database schema to the newest migration (creates the tables on a new database)."""
    from service.migrate import upgrade_to_head

    settings = _settings(database_url)
    upgrade_to_head(settings.database_url)
    logger.info("database is at the migration head")


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(8000, help="TCP port."),
    models: Path | None = typer.Option(
        None, "--models", help="Model bundles directory (default: artifacts)."
    ),
    database_url: str | None = typer.Option(None, "--database-url", help=DATABASE_URL_HELP),
    workers: int = typer.Option(
        1,
        min=1,
        help="Server processes; each holds its own indexes and keeps them in step with the database.",
    ),
    access_log: bool | None = typer.Option(
        None,
        "--access-log/--no-access-log",
        help="Log every request (default: SEMHASH_LOG_REQUESTS, on; /metrics counts them either way).",
    ),
) -> None:
    """Serve the REST API (docs at /docs) with uvicorn."""
    import uvicorn

    from service.db import make_engine
    from service.migrate import DatabaseNotAtHeadError, ensure_at_head

    # Worker processes build the app from the environment, so the overrides go there.
    if models is not None:
        os.environ["SEMHASH_MODELS_DIR"] = str(models)
    if database_url is not None:
        os.environ["SEMHASH_DATABASE_URL"] = database_url
    if access_log is not None:
        os.environ["SEMHASH_LOG_REQUESTS"] = str(access_log).lower()
    settings = _settings(None)
    engine = make_engine(settings.database_url)
    try:
        ensure_at_head(engine)
    except DatabaseNotAtHeadError as err:
        logger.error("%s", err)
        raise typer.Exit(code=1) from err
    finally:
        engine.dispose()
    uvicorn.run(
        "service.main:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Logging is ours (JSON lines with request ids, one line per request): see service/request_log.py.
        log_config=None,
        access_log=False,
        log_level="info",
    )


def index(
    collection: str = typer.Option(
        ..., "--collection", help="Collection to index into (created if missing)."
    ),
    input_path: str = typer.Option(
        ..., "--input", help="A .jsonl[.gz] file, a folder of .txt files or of train.jsonl[.gz], or '20news'."
    ),
    bundle_dir: Path | None = typer.Option(None, "--bundle", help="Text bundle (default: <models>/text)."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Documents per transaction."),
    workers: int = typer.Option(
        min(os.cpu_count() or 1, 4),
        "--workers",
        min=0,
        help="Processes that encode while this one writes (0: encode here). Default: the cores, up to 4.",
    ),
    split: str = typer.Option("train", help="Split to read when the input has several."),
    database_url: str | None = typer.Option(None, "--database-url", help=DATABASE_URL_HELP),
    progress: bool = typer.Option(
        sys.stderr.isatty(), "--progress/--no-progress", help="Progress bar on stderr."
    ),
) -> None:
    """Encode and upsert documents in batches; safe to stop and re-run (upserts by id, no duplicates)."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    from bundles.io import BundleError
    from bundles.text import TextBundle
    from service.bulk import index_records
    from service.db import make_engine, make_session_factory
    from service.errors import ConflictError, NotFoundError, database_error_kind, printable
    from service.migrate import DatabaseNotAtHeadError, ensure_at_head
    from training.corpus import CorpusError, stream_corpus

    settings = _settings(database_url)
    engine = make_engine(settings.database_url)  # connects on first use
    # Whatever stops the job, the batches committed before stay (each is whole): rerun the same command
    # after the fix and it finishes. Each failure is one log line, never a traceback.
    try:
        bundle = TextBundle.load(bundle_dir or settings.text_bundle_dir)
        records, total = stream_corpus(input_path, split)
        ensure_at_head(engine)
        report = index_records(
            make_session_factory(engine),
            collection,
            records,
            bundle,
            total=total,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )
    except (BundleError, CorpusError, ConflictError, NotFoundError, DatabaseNotAtHeadError) as err:
        logger.error("indexing stopped: %s", printable(str(err)))
        raise typer.Exit(code=EXIT_BAD_INPUT) from None
    except (DBAPIError, PoolTimeoutError) as err:
        lines = str(getattr(err, "orig", None) or err).strip().splitlines()
        reason = printable(lines[0] if lines else type(err).__name__)
        if database_error_kind(err) == "unavailable":
            logger.error(
                "indexing stopped: the database is unavailable (%s); the batches committed so far stay, "
                "run the same command to finish",
                reason,
            )
            raise typer.Exit(code=EXIT_DATABASE_UNAVAILABLE) from None
        logger.error("indexing stopped: the database refused a batch (%s)", reason)
        raise typer.Exit(code=EXIT_BAD_INPUT) from None
    except KeyboardInterrupt as err:  # the job's `Interrupted` (SIGINT or SIGTERM), or Ctrl-C before it
        signum = getattr(err, "signum", signal.SIGINT)
        logger.warning(
            "interrupted (%s): the batches committed so far stay; run the same command to finish",
            signal.Signals(signum).name,
        )
        raise typer.Exit(code=EXIT_STOPPED_BY_SIGNAL + signum) from None
    finally:
        engine.dispose()
    logger.info(
        "indexed %d of %d documents into %r in %.1f s (%.0f docs/s); %d skipped (no vocabulary word)",
        report.written,
        report.documents,
        collection,
        report.seconds,
        report.documents_per_second,
        report.skipped_empty,
    )


def register_service_commands(app: typer.Typer) -> None:
    """Attach the service commands to the root `semhash` app."""
    app.command()(serve)
    app.command()(index)
    app.command()(migrate)
