"""The bulk job behind `semhash index`: stream documents, encode them in batches, upsert each batch.

One transaction per batch, committed in input order, so the job can be stopped at any moment and
re-run to finish (documents are upserted by external id: nothing is duplicated or lost). Encoding,
most of the job's time, runs in worker processes while this one reads the input and writes.

SIGINT (Ctrl-C) and SIGTERM stop the job the same way: `Interrupted` is raised in its main thread, never
inside a batch's write (a signal that arrives then is held until the batch has committed), the workers
are shut down, and the caller exits with 128 + the signal's number. The workers leave the job's
process group, so a signal sent to the group (a terminal's Ctrl-C, `kill -TERM -PGID`) stops the job
alone, which then stops them; and they exit by themselves if the job dies without doing so (`kill -9`).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bundles.text import EmptyDocumentError, TextBundle, TextCodes
from service.db import Collection
from service.errors import NotFoundError
from service.parent_watch import exit_with
from service.store import create_collection, find_collection
from service.upsert import IncomingDocument, check_batch, ensure_bundle_matches, write_encoded
from service.validation import document_id_problem, text_problem
from training.corpus import CorpusError, Record

logger = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Interrupted(KeyboardInterrupt):
    """The job was stopped by SIGINT or SIGTERM (`signum`), between batches: each batch is whole."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Stop:
    """The job's handler of the stop signals: it raises `Interrupted` where the main thread is, except
    inside `deferred()`, where the signal is held and raised when the block ends. Only the first signal
    counts; later ones are ignored while the job stops (which waits for at most the batches the workers
    already hold)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = False
        self._held = False

    def handle(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            return
        self.received = signum
        if self._deferring:
            self._held = True
        else:
            raise Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block no stop signal interrupts: one that arrives meanwhile is raised when it ends."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._held:
            self._held = False
            raise Interrupted(self.received or signal.SIGINT)


@contextmanager
def _stopped_by_signals() -> Iterator[_Stop]:
    """SIGINT and SIGTERM handled by a `_Stop` while the block runs, then their handlers as before.

    Handlers can only be set in the main thread: elsewhere the signals keep theirs. A signal ignored
    when the job starts (SIGINT of a job started in the background by `nohup` or a script) stays ignored.
    """
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, stop.handle)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, handler)


@dataclass
class IndexingReport:
    """What one run of the bulk job did."""

    documents: int = 0  # read from the input
    written: int = 0  # inserted or replaced
    skipped_empty: int = 0  # empty or without a vocabulary word, so they have no code
    seconds: float = 0.0

    @property
    def documents_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def _collection_for(
    session_factory: sessionmaker[Session], name: str, bundle: TextBundle, create: bool
) -> Collection:
    with session_factory() as session:
        try:
            collection = find_collection(session, name)
        except NotFoundError:
            if not create:
                raise
            collection = create_collection(session, name, bundle)
            session.commit()
            logger.info("created collection %r for bundle %s", name, bundle.bundle_id)
        ensure_bundle_matches(collection, bundle)
        return collection


def encode_skipping_empty(bundle: TextBundle, texts: Sequence[str]) -> tuple[TextCodes, list[int]]:
    """Codes of the texts the model can encode, and the positions of those it cannot (left out)."""
    try:
        return bundle.encode(texts), []
    except EmptyDocumentError as err:
        unencodable = set(err.indices)
        kept = [text for position, text in enumerate(texts) if position not in unencodable]
        return bundle.encode(kept), sorted(unencodable)


def _batches(records: Iterable[Record], batch_size: int) -> Iterator[list[Record]]:
    """Consecutive batches, checked as the API checks documents: an invalid id, a NUL character or an
    id repeated inside one batch is an input error naming where it is."""
    batch: list[Record] = []
    seen: dict[str, Record] = {}
    for record in records:
        labels = (record.label or "") + "".join(record.labels or ())
        problem = text_problem(record.text) or text_problem(labels)
        if problem is not None:
            raise CorpusError(f"{record.where}: the text or label {problem}")
        problem = document_id_problem(record.id)
        if problem is not None:
            raise CorpusError(f"{record.where}: document id {ascii(record.id)} {problem}")
        if record.id in seen:
            first = seen[record.id].where
            raise CorpusError(f"document id {record.id!r} appears twice: {first} and {record.where}")
        seen[record.id] = record
        batch.append(record)
        if len(batch) == batch_size:
            yield batch
            batch, seen = [], {}
    if batch:
        yield batch


_worker_bundle: TextBundle | None = None  # the bundle of one encoding worker process


def _start_worker(bundle: TextBundle, job_pid: int) -> None:
    """Each encoding worker's initializer. The worker leaves the job's process group, so that a stop
    signal sent to the group reaches the job alone (the job stops its workers itself, after the batches
    they hold); one sent in the moment before that was held back (the workers are forked with the stop
    signals blocked) and is dropped here, by ignoring it before unblocking. SIGTERM then gets its
    default action back: it is how the pool ends its workers when one of them dies. And the worker
    exits when the job ends without stopping it (killed)."""
    global _worker_bundle
    _worker_bundle = bundle
    os.setpgid(0, 0)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    exit_with(job_pid)


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """The stop signals blocked in this thread (and so in processes it forks) for the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _encode_in_worker(texts: list[str]) -> tuple[TextCodes, list[int]]:
    assert _worker_bundle is not None, "worker started without a bundle"
    return encode_skipping_empty(_worker_bundle, texts)


@contextmanager
def _encoding_workers(bundle: TextBundle, workers: int, stop: _Stop) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` forked processes that encode with `bundle` (None for 0), started right away.

    Why processes: tokenizing is pure Python, so encoding is bound by one core's GIL, and it is most
    of the job's time. Forked workers start in milliseconds and inherit the loaded bundle; nothing in
    them touches the database. They are started here, before the progress bar's monitor thread
    exists, because fork() copies only the calling thread. A stop signal does not interrupt their
    shutdown, which waits for the batches they hold.
    """
    if workers == 0:
        yield None
        return
    # Move everything alive now (modules, the bundle, the database engine) out of the collector's
    # reach, as Python's gc docs advise before fork(): the children's collections then do not write to
    # (and so copy) the pages they share with this process, and this process's own collections, which
    # the job's many short-lived rows trigger, stop rescanning them.
    gc.freeze()
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(bundle, os.getpid())
    )
    try:
        pool.submit(int).result()  # a fork-context pool forks all its workers at the first submit
        yield pool
    finally:
        with stop.deferred():
            pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()


def _encoded(
    bundle: TextBundle,
    batches: Iterator[list[Record]],
    pool: ProcessPoolExecutor | None,
    workers: int,
    stop: _Stop,
) -> Iterator[tuple[list[Record], TextCodes, list[int]]]:
    """Each batch with its codes, in input order, encoded by the pool's workers (or here, without one).

    The workers encode the next batches while the caller writes the current one; at most 2 batches
    per worker are in flight, so memory stays flat.
    """
    if pool is None:
        for batch in batches:
            yield batch, *encode_skipping_empty(bundle, [record.text for record in batch])
        return
    in_flight: deque[tuple[list[Record], Future[tuple[TextCodes, list[int]]]]] = deque()
    bad_input: CorpusError | None = None
    try:
        for batch in batches:
            with stop.deferred():  # not inside the pool's bookkeeping
                future = pool.submit(_encode_in_worker, [record.text for record in batch])
            in_flight.append((batch, future))
            if len(in_flight) >= 2 * workers:
                done, future = in_flight.popleft()
                yield done, *future.result()
    except CorpusError as err:
        bad_input = err  # further on in the input: first write the batches read before it
    while in_flight:
        done, future = in_flight.popleft()
        yield done, *future.result()
    if bad_input is not None:
        raise bad_input


def _incoming(record: Record) -> IncomingDocument:
    if record.labels is not None:  # a multi-label corpus
        return IncomingDocument(record.id, record.text, {"labels": list(record.labels)})
    return IncomingDocument(record.id, record.text, None if record.label is None else {"label": record.label})


def index_records(
    session_factory: sessionmaker[Session],
    collection_name: str,
    records: Iterable[Record],
    bundle: TextBundle,
    *,
    total: int | None = None,
    batch_size: int = 1000,
    workers: int = 0,
    create: bool = True,
    progress: bool = False,
) -> IndexingReport:
    """Encode and upsert a stream of documents into the collection, one transaction per batch.

    `total` (when known) sizes the progress bar; `workers` > 0 encodes in that many processes.
    Documents the model cannot encode (empty, no vocabulary word) are skipped and counted. Safe to
    stop at any moment and run again: batches are committed in input order, each whole or not at all,
    and documents are upserted by id, so a re-run finishes the job without duplicates. In the main
    thread, SIGINT and SIGTERM raise `Interrupted` between batches (see the module's docstring).
    """
    report = IndexingReport()
    started = time.perf_counter()
    with _stopped_by_signals() as stop, ExitStack() as stack:
        # Threads started with the stop signals blocked keep them blocked (the pool's, the progress bar's
        # monitor), so a signal always goes to the main thread: taken by another, it would not wake the
        # main thread from waiting for input. And forked workers start with them blocked.
        with stop.deferred(), _stop_signals_blocked():
            collection = _collection_for(session_factory, collection_name, bundle, create)
            pool = stack.enter_context(_encoding_workers(bundle, workers, stop))
            bar = stack.enter_context(
                tqdm(total=total, unit="doc", disable=not progress, desc=collection_name)
            )
        stack.enter_context(logging_redirect_tqdm())
        for batch, codes, unencodable in _encoded(bundle, _batches(records, batch_size), pool, workers, stop):
            skipped = set(unencodable)
            kept = [_incoming(record) for position, record in enumerate(batch) if position not in skipped]
            with stop.deferred(), session_factory() as session:  # a stop waits for the commit
                check_batch(collection, bundle, kept)
                written = write_encoded(session, collection, kept, codes.addresses, codes.long_codes)
                session.commit()
            report.written += len(written)
            report.documents += len(batch)
            report.skipped_empty += len(skipped)
            report.seconds = time.perf_counter() - started
            bar.update(len(batch))  # tqdm shows the rate in docs/s
    return report
