"""The bulk job: `semhash index` from a JSONL file, re-runs, skipped documents, and a live server."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from processes import PATIENCE_SECONDS, all_ended, children, watching
from sqlalchemy import event, select
from typer.testing import CliRunner

from bundles.text import TextBundle
from semhash_cli import app as cli
from service.bulk import Interrupted, index_records
from service.db import Collection, Document, make_engine, make_session_factory
from training.corpus import Corpus


def write_jsonl_gz(path: Path, corpus: Corpus, extra: list[dict] | None = None) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as lines:
        for external_id, text, label in zip(corpus.ids, corpus.texts, corpus.labels or [], strict=True):
            lines.write(json.dumps({"id": external_id, "text": text, "label": label}) + "\n")
        for record in extra or []:
            lines.write(json.dumps(record) + "\n")
    return path


def live_documents(url: str, collection: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(
                connection.scalars(
                    select(Document.external_id)
                    .join(Collection)
                    .where(Collection.name == collection, Document.deleted.is_(False))
                )
            )
    finally:
        engine.dispose()


def index_arguments(
    source: Path, models_dir: Path, url: str, batch_size: int, collection: str = "news"
) -> list[str]:
    """`semhash index` arguments for one input file, the test bundle and database, without progress."""
    return [
        *("index", "--collection", collection, "--input", str(source), "--bundle", str(models_dir / "text")),
        *("--batch-size", str(batch_size), "--database-url", url, "--no-progress"),
    ]


def test_cli_indexes_a_file_and_a_rerun_adds_no_duplicates(
    migrated_url: str, models_dir: Path, topic_corpus: Corpus, tmp_path: Path
) -> None:
    unencodable = {"id": "empty", "text": "words the model never saw", "label": "none"}
    source = write_jsonl_gz(tmp_path / "docs.jsonl.gz", topic_corpus, [unencodable])
    arguments = index_arguments(source, models_dir, migrated_url, batch_size=64)
    runner = CliRunner()
    first = runner.invoke(cli, arguments)
    assert first.exit_code == 0, first.output
    assert sorted(live_documents(migrated_url, "news")) == sorted(topic_corpus.ids)
    second = runner.invoke(cli, arguments)
    assert second.exit_code == 0, second.output
    documents = live_documents(migrated_url, "news")
    assert len(documents) == len(set(documents)) == len(topic_corpus)


def test_a_run_killed_mid_batch_leaves_whole_batches_and_the_rerun_finishes(
    migrated_url: str, text_bundle: TextBundle, topic_corpus: Corpus
) -> None:
    engine = make_engine(migrated_url)
    inserts = []

    def die_on_the_third_batch(_conn, _cursor, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DOCUMENTS"):
            inserts.append(statement)
            if len(inserts) == 3:
                raise KeyboardInterrupt  # as if the job were stopped with Ctrl-C inside the transaction

    try:
        sessions = make_session_factory(engine)
        event.listen(engine, "before_cursor_execute", die_on_the_third_batch)
        with pytest.raises(KeyboardInterrupt):
            index_records(
                sessions, "news", topic_corpus.records(), text_bundle, batch_size=32, progress=False
            )
        event.remove(engine, "before_cursor_execute", die_on_the_third_batch)
        assert sorted(live_documents(migrated_url, "news")) == sorted(
            topic_corpus.ids[:64]
        )  # two whole batches
        report = index_records(
            sessions, "news", topic_corpus.records(), text_bundle, batch_size=32, progress=False
        )
        assert report.written == len(topic_corpus) and report.skipped_empty == 0
    finally:
        engine.dispose()
    documents = live_documents(migrated_url, "news")
    assert sorted(documents) == sorted(topic_corpus.ids)


def test_documents_indexed_by_another_process_become_searchable(
    client: TestClient, migrated_url: str, text_bundle: TextBundle, topic_corpus: Corpus
) -> None:
    assert client.post("/v1/collections", json={"name": "news"}).status_code == 201
    job_engine = make_engine(migrated_url)  # the bulk job's own engine, as in another process
    try:
        index_records(
            make_session_factory(job_engine),
            "news",
            topic_corpus.records(),
            text_bundle,
            batch_size=50,
            workers=2,  # the CLI's default on a 2-core machine: forked encoding workers
        )
        # A hang detector, not a latency check (a loaded machine can starve the poller for seconds);
        # benchmarks/scale.py measures how soon another process sees a write.
        deadline = time.monotonic() + 60
        target = topic_corpus.ids[123]
        while True:
            response = client.post(
                "/v1/collections/news/search",
                json={"text": topic_corpus.texts[123], "radius": 0, "limit": 1000},
            )
            if target in {hit["id"] for hit in response.json()["data"]}:
                break
            assert time.monotonic() < deadline, "the server's index did not catch up within 60 s"
            time.sleep(0.05)
    finally:
        job_engine.dispose()


def test_a_server_started_without_collections_finds_one_the_bulk_job_creates_in_another_process(
    client: TestClient, migrated_url: str, models_dir: Path, topic_corpus: Corpus, tmp_path: Path
) -> None:
    """The compose stack's order: the API starts on an empty database, then `semhash index` (its own
    process) creates the collection and fills it; the server's poller must pick up the new collection."""
    assert client.get("/v1/collections").json()["count"] == 0
    source = write_jsonl_gz(tmp_path / "docs.jsonl.gz", topic_corpus)
    semhash = Path(sys.executable).with_name("semhash")
    job = subprocess.run(
        [str(semhash), *index_arguments(source, models_dir, migrated_url, batch_size=50), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr
    target = topic_corpus.ids[123]
    deadline = time.monotonic() + 60  # generous: the poller runs every 0.2 s here
    while True:
        response = client.post(
            "/v1/collections/news/search", json={"text": topic_corpus.texts[123], "radius": 0, "limit": 1000}
        )
        if response.status_code == 200 and target in {hit["id"] for hit in response.json()["data"]}:
            break
        assert time.monotonic() < deadline, f"the server never found the new collection: {response.text}"
        time.sleep(0.05)
    assert client.get("/v1/collections/news").json()["document_count"] == len(topic_corpus)


def stored_codes(url: str, collection: str) -> dict[str, tuple[int, bytes]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Document.external_id, Document.address, Document.long_code)
                .join(Collection)
                .where(Collection.name == collection)
            )
            return {external_id: (address, code) for external_id, address, code in rows}
    finally:
        engine.dispose()


def test_worker_processes_store_what_inline_encoding_stores(
    migrated_url: str, text_bundle: TextBundle, topic_corpus: Corpus
) -> None:
    engine = make_engine(migrated_url)
    try:
        sessions = make_session_factory(engine)
        inline = index_records(sessions, "inline", topic_corpus.records(), text_bundle, batch_size=37)
        pooled = index_records(
            sessions, "pooled", topic_corpus.records(), text_bundle, batch_size=37, workers=2
        )
    finally:
        engine.dispose()
    assert inline.written == pooled.written == len(topic_corpus)
    assert pooled.documents == len(topic_corpus) and pooled.skipped_empty == 0
    assert stored_codes(migrated_url, "inline") == stored_codes(migrated_url, "pooled")


@pytest.mark.parametrize(
    ("bad_records", "message"),
    [
        ([{"id": "x", "text": "a NUL \u0000 here"}], "line 5: the text or label must not contain NUL"),
        ([{"id": "d", "text": "one"}, {"id": "d", "text": "two"}], "'d' appears twice: .*5 and .*6"),
        ([{"id": "", "text": "no id"}], "line 5: document id '' must be 1 to 256 characters"),
        ([{"id": "a\nb", "text": "newline"}], "line 5: document id 'a\\\\nb' must not contain control"),
    ],
)
def test_bad_input_stops_the_job_with_its_line_and_keeps_earlier_batches(
    migrated_url: str,
    models_dir: Path,
    topic_corpus: Corpus,
    tmp_path: Path,
    bad_records: list[dict],
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Lines 1-4 are documents of the corpus; batches of 2 commit lines 1-2 and 3-4, then the batch of
    # line 5 (and 6) fails. Encoding workers read ahead, so this checks they write what came before.
    first_four = topic_corpus.subset([0, 1, 2, 3])
    source = write_jsonl_gz(tmp_path / "docs.jsonl.gz", first_four, bad_records)
    result = CliRunner().invoke(cli, index_arguments(source, models_dir, migrated_url, batch_size=2))
    assert result.exit_code == 3  # bad input (2 is a bad command line)
    assert re.search(message, caplog.text), caplog.text
    assert "Traceback" not in result.output
    assert sorted(live_documents(migrated_url, "news")) == sorted(first_four.ids)


def test_a_stop_signal_during_a_batch_is_held_until_the_batch_has_committed(
    migrated_url: str, text_bundle: TextBundle, topic_corpus: Corpus
) -> None:
    engine = make_engine(migrated_url)
    inserts = 0

    def stop_inside_the_third_batch(_conn, _cursor, statement: str, *_args: object) -> None:
        nonlocal inserts
        if statement.lstrip().upper().startswith("INSERT INTO DOCUMENTS"):
            inserts += 1
            if inserts == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would, between the INSERT and the COMMIT

    event.listen(engine, "before_cursor_execute", stop_inside_the_third_batch)
    try:
        with pytest.raises(Interrupted) as stopped:
            index_records(
                make_session_factory(engine), "news", topic_corpus.records(), text_bundle, batch_size=32
            )
    finally:
        event.remove(engine, "before_cursor_execute", stop_inside_the_third_batch)
        engine.dispose()
    assert stopped.value.signum == signal.SIGTERM and inserts == 3
    assert sorted(live_documents(migrated_url, "news")) == sorted(topic_corpus.ids[:96])  # 3 whole batches


def copies_of(corpus: Corpus, copies: int) -> list[str]:
    """JSON lines of `copies` copies of the corpus (ids made distinct)."""
    return [
        json.dumps({"id": f"{copy}-{external_id}", "text": text}) + "\n"
        for copy in range(copies)
        for external_id, text in zip(corpus.ids, corpus.texts, strict=True)
    ]


@contextmanager
def indexing_from_a_pipe(
    tmp_path: Path, models_dir: Path, url: str, lines: list[str]
) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """`semhash index` with 2 encoding workers and batches of 20, reading a named pipe that gives it
    `lines` and then waits for more, which never comes: the job is still running however fast or slow
    the machine (no timing involved). Yields the job once it has committed a batch (give it more than 4
    batches: the first is written when the workers have 4), with pidfds of its workers (`processes`)."""
    pipe = tmp_path / "many.jsonl"
    os.mkfifo(pipe)
    semhash = Path(sys.executable).with_name("semhash")
    arguments = index_arguments(pipe, models_dir, url, batch_size=20, collection="many")
    # Its own process group, as a terminal's foreground job: a Ctrl-C goes to every process in it.
    # SIGINT's default action restored in the child: a test run started in the background by a script
    # inherits SIGINT ignored, and an ignored SIGINT stays ignored across exec (a terminal's job never is).
    job = subprocess.Popen(
        [str(semhash), *arguments, "--workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    writer = None
    try:
        deadline = time.monotonic() + PATIENCE_SECONDS
        while writer is None:  # opening a pipe's writing end succeeds once the job has opened it to read
            try:
                writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert job.poll() is None and time.monotonic() < deadline, "the job did not open its input"
                time.sleep(0.05)
        os.set_blocking(writer, True)
        os.write(writer, "".join(lines).encode())
        while not live_documents(url, "many"):
            assert job.poll() is None and time.monotonic() < deadline, "the job did not start writing"
            time.sleep(0.05)
        with watching(children(job.pid)) as workers:  # forked before the job read its input
            yield job, workers
    finally:
        if writer is not None:
            os.close(writer)
        if job.poll() is None:
            job.kill()
            job.wait()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_job_and_its_workers_cleanly_and_a_rerun_finishes(
    migrated_url: str, models_dir: Path, topic_corpus: Corpus, tmp_path: Path, stop: signal.Signals
) -> None:
    lines = copies_of(topic_corpus, 15)
    with indexing_from_a_pipe(tmp_path, models_dir, migrated_url, lines[:200]) as (job, workers):
        assert len(workers) == 2
        os.killpg(job.pid, stop)  # the whole group, as a terminal's Ctrl-C or `kill -TERM -PGID`
        _, errors = job.communicate(timeout=PATIENCE_SECONDS)
        assert all_ended(workers, within=PATIENCE_SECONDS), "an encoding worker outlived the job"
    assert job.returncode == 128 + stop, errors  # 130 for SIGINT, 143 for SIGTERM
    assert "Traceback" not in errors and f"interrupted ({stop.name})" in errors
    written = live_documents(migrated_url, "many")
    assert 0 < len(written) <= 200 and len(written) % 20 == 0  # whole batches of what it was given
    whole = tmp_path / "all.jsonl"
    whole.write_text("".join(lines), encoding="utf-8")
    rerun = index_arguments(whole, models_dir, migrated_url, batch_size=20, collection="many")
    semhash = Path(sys.executable).with_name("semhash")
    assert subprocess.run([str(semhash), *rerun, "--workers", "2"], capture_output=True).returncode == 0
    assert len(set(live_documents(migrated_url, "many"))) == len(lines)


def test_encoding_workers_exit_when_the_job_is_killed(
    migrated_url: str, models_dir: Path, topic_corpus: Corpus, tmp_path: Path
) -> None:
    lines = copies_of(topic_corpus, 1)[:200]
    with indexing_from_a_pipe(tmp_path, models_dir, migrated_url, lines) as (job, workers):
        assert len(workers) == 2
        job.kill()  # as `kill -9` or the out-of-memory killer would: the job cannot stop them itself
        job.wait()
        assert all_ended(workers, within=PATIENCE_SECONDS), "an encoding worker outlived the killed job"
