"""Document corpora: JSON lines, a folder of .txt files, and 20 Newsgroups (bydate).

Every loader returns a `Corpus`: parallel lists of ids, texts and (optional) labels. Malformed input
raises `CorpusError` naming the file and, for JSON lines, the line number.

`load_corpus(source, split)` is the one entry point of the CLI:

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
import json
import logging
import os
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
    """Documents in a fixed order. `labels` is None when the source has none."""

    ids: list[str]
    texts: list[str]
    labels: list[str] | None = None
    source: str = ""  # where it came from, for messages and configs
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: list[int]) -> Corpus:
        """The documents at `rows`, in that order."""
        labels = None if self.labels is None else [self.labels[i] for i in rows]
        return Corpus(
            [self.ids[i] for i in rows], [self.texts[i] for i in rows], labels, self.source, self.meta
        )


def load_jsonl(path: Path | str) -> Corpus:
    """Read `{"id": str, "text": str, "label": str (optional)}` per line from .jsonl or .jsonl.gz.

    Blank lines are skipped. Labels must be on every line or on none.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    ids: list[str] = []
    texts: list[str] = []
    labels: list[str | None] = []
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                record = _parse_record(line, path, number)
                ids.append(record[0])
                texts.append(record[1])
                labels.append(record[2])
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read ({err})") from err
    if not texts:
        raise CorpusError(f"{path} holds no documents")
    if len(set(ids)) != len(ids):
        raise CorpusError(f"{path}: document ids are not unique")
    labelled = [label is not None for label in labels]
    if any(labelled) and not all(labelled):
        first = labelled.index(not labelled[0]) + 1
        raise CorpusError(f"{path}: some documents have a label and some do not (document {first})")
    return Corpus(ids, texts, labels if all(labelled) else None, str(path))  # type: ignore[arg-type]


def _parse_record(line: str, path: Path, number: int) -> tuple[str, str, str | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
    if not isinstance(record, dict):
        raise CorpusError(f"{path}, line {number}: expected a JSON object")
    for key in ("id", "text"):
        if not isinstance(record.get(key), str):
            raise CorpusError(f"{path}, line {number}: field {key!r} must be a string")
    label = record.get("label")
    if label is not None and not isinstance(label, str):
        raise CorpusError(f"{path}, line {number}: field 'label' must be a string when present")
    return record["id"], record["text"], label


def load_text_folder(path: Path | str) -> Corpus:
    """Every `*.txt` file below `path` (sorted); id = relative path; label = parent folder if nested."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not files:
        raise CorpusError(f"{root} holds no .txt files")
    ids, texts, labels = [], [], []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise CorpusError(f"{file}: cannot read as UTF-8 text ({err})") from err
        relative = file.relative_to(root)
        ids.append(relative.as_posix())
        labels.append(relative.parent.as_posix())
    nested = all(label != "." for label in labels)
    return Corpus(ids, texts, labels if nested else None, str(root))


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
    shared = REPO_ROOT.parent / "shared" / "data" / "20news"
    return shared if split_file(shared, "train") is not None else None


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
    from sklearn.datasets import fetch_20newsgroups

    bunch = fetch_20newsgroups(subset=split, shuffle=False)
    names = list(bunch.target_names)
    ids = [f"{names[t]}/{Path(f).name}" for t, f in zip(bunch.target, bunch.filenames, strict=True)]
    labels = [names[t] for t in bunch.target]
    return Corpus(ids, list(bunch.data), labels, f"{TWENTY_NEWS}:{split}")


def load_corpus(source: str | Path, split: str = "train") -> Corpus:
    """Resolve a CLI `--corpus` value (see the module docstring) to the documents of `split`."""
    if str(source) == TWENTY_NEWS:
        return load_20news(split)
    path = Path(source)
    if path.is_dir():
        file = split_file(path, split)
        if file is not None:
            return load_jsonl(file)
        if split != "train":
            raise CorpusError(f"{path} has no {split}.jsonl[.gz] for the {split} split")
        return load_text_folder(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return load_jsonl(path)
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
