"""Document corpora: JSON lines, a folder of .txt files, and 20 Newsgroups (bydate).

Every loader returns a `Corpus`: parallel lists of ids, texts and (optional) labels. A document has
one label (`"label": "sci.space"`) or a set of them (`"labels": ["physics", "space"]`, a multi-label
corpus: two documents are related when they share a label). Malformed input raises `CorpusError`
naming the file and, for JSON lines, the line number.

`load_corpus(source, split)` is the one entry point of the CLI; `stream_corpus` reads the same
sources one document at a time, for the bulk indexing job:

* ``"20news"``: the 20 Newsgroups bydate split, from the first of ``$SEMHASH_20NEWS_DIR``,
  ``../shared/data/20news`` (relative to the repository) or scikit-learn's `fetch_20newsgroups`
  (downloads; raw text with headers kept, as in the shared copy).
* a directory holding ``train.jsonl[.gz]`` / ``test.jsonl[.gz]``: that split (the layout of the
  shared 20 Newsgroups copy, so any labelled corpus can be evaluated the same way);
* a ``.jsonl`` / ``.jsonl.gz`` file: its documents (any split);
* another directory: every ``*.txt`` below it, labelled by its parent folder when nested.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TWENTY_NEWS = "20news"
SPLITS = ("train", "test")
REPO_ROOT = Path(__file__).resolve().parent.parent


class CorpusError(ValueError):
    """A corpus that cannot be read: missing, malformed, or without the labels a caller needs."""


@dataclass
class Corpus:
    """Documents in a fixed order.

    `labels`: one label per document (single-label corpora), else None. `label_sets`: a tuple of labels
    per document (multi-label corpora, possibly empty tuples), else None. At most one of them is set.
    """

    ids: list[str]
    texts: list[str]
    labels: list[str] | None = None
    source: str = ""  # where it came from, for messages and configs
    meta: dict[str, str] = field(default_factory=dict)
    label_sets: list[tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labelled(self) -> bool:
        return self.labels is not None or self.label_sets is not None

    def relevance_labels(self) -> list[tuple[str, ...]] | None:
        """Every document's labels as a tuple (single labels as 1-tuples); None when unlabelled."""
        if self.label_sets is not None:
            return self.label_sets
        return None if self.labels is None else [(label,) for label in self.labels]

    def records(self) -> Iterator[Record]:
        """The documents one at a time, as a streamed source would give them."""
        labels = self.labels or [None] * len(self.texts)
        label_sets = self.label_sets or [None] * len(self.texts)
        for external_id, text, label, label_set in zip(self.ids, self.texts, labels, label_sets, strict=True):
            yield Record(external_id, text, label, f"{self.source}, document {external_id}", label_set)

    def subset(self, rows: list[int]) -> Corpus:
        """The documents at `rows`, in that order."""
        labels = None if self.labels is None else [self.labels[i] for i in rows]
        label_sets = None if self.label_sets is None else [self.label_sets[i] for i in rows]
        return Corpus(
            [self.ids[i] for i in rows],
            [self.texts[i] for i in rows],
            labels,
            self.source,
            self.meta,
            label_sets,
        )


@dataclass(frozen=True)
class Record:
    """One document as read from a source; `where` names it in error messages ("file, line 12")."""

    id: str
    text: str
    label: str | None = None
    where: str = ""
    labels: tuple[str, ...] | None = None  # a multi-label document's labels ("labels" in JSON lines)

    @property
    def labelled(self) -> bool:
        return self.label is not None or self.labels is not None


def iter_jsonl(path: Path | str) -> Iterator[Record]:
    """Stream `{"id": str, "text": str, "label": str | "labels": [str, ...] (optional)}` lines of a
    .jsonl or .jsonl.gz file.

    Blank lines are skipped; a malformed line raises `CorpusError` when it is reached.
    """
    path = Path(path)
    if not (path.is_file() or path.is_fifo()):
        raise CorpusError(f"corpus file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _parse_record(line, path, number)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read ({err})") from err


def _collect(records: Iterable[Record], source: str) -> Corpus:
    """A `Corpus` from records: ids must be unique, and labels on every document or on none.

    When any document has a `labels` list the corpus is multi-label, and single `label`s count as
    one-label sets.
    """
    ids, texts, kept = [], [], []
    for record in records:
        ids.append(record.id)
        texts.append(record.text)
        kept.append(record)
    if not texts:
        raise CorpusError(f"{source} holds no documents")
    if len(set(ids)) != len(ids):
        raise CorpusError(f"{source}: document ids are not unique")
    labelled = [record.labelled for record in kept]
    if any(labelled) and not all(labelled):
        first = labelled.index(not labelled[0]) + 1
        raise CorpusError(f"{source}: some documents have a label and some do not (document {first})")
    if not all(labelled):
        return Corpus(ids, texts, None, source)
    if any(record.labels is not None for record in kept):
        label_sets = [record.labels if record.labels is not None else (str(record.label),) for record in kept]
        return Corpus(ids, texts, None, source, label_sets=label_sets)
    return Corpus(ids, texts, [str(record.label) for record in kept], source)


def load_jsonl(path: Path | str) -> Corpus:
    """All documents of a .jsonl or .jsonl.gz file (see `iter_jsonl`), ids unique."""
    return _collect(iter_jsonl(path), str(path))


def _parse_record(line: str, path: Path, number: int) -> Record:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
    if not isinstance(record, dict):
        raise CorpusError(f"{path}, line {number}: expected a JSON object")
    for key in ("id", "text"):
        if not isinstance(record.get(key), str):
            raise CorpusError(f"{path}, line {number}: field {key!r} must be a string")
    label, labels = record.get("label"), record.get("labels")
    if label is not None and not isinstance(label, str):
        raise CorpusError(f"{path}, line {number}: field 'label' must be a string when present")
    if labels is not None:
        if label is not None:
            raise CorpusError(f"{path}, line {number}: give 'label' or 'labels', not both")
        if not isinstance(labels, list) or not all(isinstance(item, str) for item in labels):
            raise CorpusError(f"{path}, line {number}: field 'labels' must be a list of strings when present")
        labels = tuple(dict.fromkeys(labels))  # duplicates dropped, order kept
    return Record(record["id"], record["text"], label, f"{path}, line {number}", labels)


def iter_text_folder(path: Path | str) -> Iterator[Record]:
    """Every `*.txt` file below `path` (sorted); id = relative path; label = parent folder if nested."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not files:
        raise CorpusError(f"{root} holds no .txt files")
    nested = all(file.parent != root for file in files)
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CorpusError(f"{file}: cannot read as UTF-8 text ({err})") from err
        relative = file.relative_to(root)
        yield Record(relative.as_posix(), text, relative.parent.as_posix() if nested else None, str(file))


def load_text_folder(path: Path | str) -> Corpus:
    """All documents of a folder of .txt files (see `iter_text_folder`)."""
    return _collect(iter_text_folder(path), str(path))


def split_file(folder: Path, split: str) -> Path | None:
    """`folder/<split>.jsonl.gz` or `folder/<split>.jsonl`, whichever exists."""
    for name in (f"{split}.jsonl.gz", f"{split}.jsonl"):
        if (folder / name).is_file():
            return folder / name
    return None


def twenty_news_dir() -> Path | None:
    """The local 20 Newsgroups copy: $SEMHASH_20NEWS_DIR, else ../shared/data/20news, else None."""
    configured = os.environ.get("SEMHASH_20NEWS_DIR")
    if configured:
        folder = Path(configured)
        if split_file(folder, "train") is None:
            raise CorpusError(f"SEMHASH_20NEWS_DIR={folder} has no train.jsonl[.gz]")
        return folder
    shared = _shared_20news_dir()
    return shared if split_file(shared, "train") is not None else None


def _shared_20news_dir() -> Path:
    return REPO_ROOT.parent / "shared" / "data" / "20news"


def load_20news(split: str) -> Corpus:
    """The 20 Newsgroups bydate `split` ("train": 11,314 documents, "test": 7,532), raw text."""
    if split not in SPLITS:
        raise CorpusError(f"split must be one of {SPLITS}, got {split!r}")
    folder = twenty_news_dir()
    if folder is not None:
        corpus = load_jsonl(split_file(folder, split))  # type: ignore[arg-type]
        corpus.source = f"{TWENTY_NEWS}:{split}"
        return corpus
    log.info("no local 20 Newsgroups copy; downloading with sklearn.datasets.fetch_20newsgroups")
    from sklearn.datasets import fetch_20newsgroups, get_data_home

    try:
        bunch = fetch_20newsgroups(subset=split, shuffle=False)
    except OSError as err:  # no internet, a proxy or a firewall (URLError is an OSError)
        raise CorpusError(
            f"20 Newsgroups not found: SEMHASH_20NEWS_DIR is not set, {_shared_20news_dir()} has no "
            f"train.jsonl[.gz], and scikit-learn could not download it into {get_data_home()} "
            f"({getattr(err, 'reason', err)}). Set SEMHASH_20NEWS_DIR to a folder with train.jsonl.gz and "
            "test.jsonl.gz, or run once with internet access"
        ) from err
    names = list(bunch.target_names)
    ids = [f"{names[t]}/{Path(f).name}" for t, f in zip(bunch.target, bunch.filenames, strict=True)]
    labels = [names[t] for t in bunch.target]
    return Corpus(ids, list(bunch.data), labels, f"{TWENTY_NEWS}:{split}")


def load_corpus(source: str | Path, split: str = "train") -> Corpus:
    """Resolve a CLI `--corpus` value (see the module docstring) to the documents of `split`."""
    if str(source) == TWENTY_NEWS:
        return load_20news(split)
    return _collect(_stream_file_source(source, split), str(source))


def stream_corpus(source: str | Path, split: str = "train") -> tuple[Iterator[Record], int | None]:
    """The documents of `source` one at a time, and how many there are when that is cheap to know.

    Files are read lazily, so memory stays flat whatever their size. Unlike `load_corpus`, ids are not
    checked for uniqueness (that would need them all in memory): a consumer that upserts by id keeps
    the last one. The count is known for uncompressed JSON lines (one fast pass counting non-blank
    lines) and text folders; None for .gz files, where counting would mean decompressing twice.
    """
    if str(source) == TWENTY_NEWS:
        folder = twenty_news_dir()
        if folder is None:  # the scikit-learn download comes whole
            corpus = load_20news(split)
            return corpus.records(), len(corpus)
        source = folder
    records = _stream_file_source(source, split)
    path = Path(source)
    if path.is_dir() and split_file(path, split) is None:
        return records, sum(1 for p in path.rglob("*.txt") if p.is_file())
    file = split_file(path, split) if path.is_dir() else path
    if file is not None and file.suffix == ".jsonl" and file.is_file():
        with open(file, "rb") as lines:
            return records, sum(1 for line in lines if line.strip())
    return records, None


def _stream_file_source(source: str | Path, split: str) -> Iterator[Record]:
    path = Path(source)
    if path.is_dir():
        file = split_file(path, split)
        if file is not None:
            return iter_jsonl(file)
        if split != "train":
            raise CorpusError(f"{path} has no {split}.jsonl[.gz] for the {split} split")
        return iter_text_folder(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        if not (path.is_file() or path.is_fifo()):  # a named pipe streams from another program
            raise CorpusError(f"corpus file {path} does not exist")
        return iter_jsonl(path)
    if not path.exists():
        raise CorpusError(f"corpus {source!r} is neither '{TWENTY_NEWS}' nor an existing path")
    raise CorpusError(f"{path}: a corpus is a .jsonl[.gz] file or a directory")


def synthetic_topic_corpus(n_documents: int, *, n_topics: int = 4, seed: int = 0) -> Corpus:
    """A small labelled corpus for tests and demos: each document mixes words of one topic with noise.

    Topic t owns 25 made-up words ("t0w0" ... "t0w24"); a document of 20-60 words draws 80% of them from
    its topic and 20% from all topics. Labels are "topic<t>".
    """
    rng = np.random.default_rng(seed)
    words = [[f"t{t}w{i}" for i in range(25)] for t in range(n_topics)]
    everything = [w for topic in words for w in topic]
    ids, texts, labels = [], [], []
    for doc in range(n_documents):
        topic = int(rng.integers(n_topics))
        length = int(rng.integers(20, 61))
        own = rng.random(length) < 0.8
        tokens = [
            words[topic][rng.integers(25)] if mine else everything[rng.integers(len(everything))]
            for mine in own
        ]
        ids.append(f"doc{doc}")
        texts.append(" ".join(tokens))
        labels.append(f"topic{topic}")
    return Corpus(ids, texts, labels, f"synthetic:{n_documents}:{seed}")


def split_by_id(corpus: Corpus, test_fraction: float) -> tuple[Corpus, Corpus]:
    """(train, test): a document is a test document iff sha256(id) falls in the first `test_fraction`
    of the hash range. The split depends on the ids alone, so training and evaluation agree on it
    without sharing a seed, and adding documents never moves the others."""
    if not 0 < test_fraction < 1:
        raise CorpusError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    test = [
        int(hashlib.sha256(external_id.encode()).hexdigest()[:8], 16) < test_fraction * 2**32
        for external_id in corpus.ids
    ]
    train_rows = [i for i, is_test in enumerate(test) if not is_test]
    test_rows = [i for i, is_test in enumerate(test) if is_test]
    if not train_rows or not test_rows:
        raise CorpusError(f"{corpus.source}: a test fraction of {test_fraction} leaves one side empty")
    train, held_out = corpus.subset(train_rows), corpus.subset(test_rows)
    train.source, held_out.source = f"{corpus.source}:train", f"{corpus.source}:test"
    return train, held_out


def load_train_test(
    source: str | Path, *, test: str | Path | None = None, test_fraction: float | None = None
) -> tuple[Corpus, Corpus]:
    """The (database, query) documents of an evaluation, from the first that applies:

    * `test`: a separate query corpus (any `--corpus` form), the database being `source`'s train split;
    * `test_fraction`: `source`'s documents split by id (`split_by_id`, as `semhash train text
      --test-fraction` holds them out);
    * `source`'s own train and test splits (20 Newsgroups, or a folder with train/test.jsonl[.gz]).
    """
    if test is not None and test_fraction is not None:
        raise CorpusError("give a separate test corpus or a test fraction, not both")
    if test_fraction is not None:
        return split_by_id(load_corpus(source, "train"), test_fraction)
    database = load_corpus(source, "train")
    return database, load_corpus(test, "train") if test is not None else load_corpus(source, "test")
