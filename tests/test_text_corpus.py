"""Corpus loaders: JSON lines, .txt folders, split folders, and clear errors on bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from training.corpus import (
    CorpusError,
    load_corpus,
    load_jsonl,
    load_text_folder,
    stream_corpus,
    synthetic_topic_corpus,
)


def write_jsonl(path: Path, records: list[dict], compress: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_and_gzip_round_trip(tmp_path: Path) -> None:
    records = [{"id": "a", "text": "hello world", "label": "x"}, {"id": "b", "text": "bye", "label": "y"}]
    for compress, name in ((False, "c.jsonl"), (True, "c.jsonl.gz")):
        corpus = load_jsonl(write_jsonl(tmp_path / name, records, compress))
        assert (
            corpus.ids == ["a", "b"]
            and corpus.texts == ["hello world", "bye"]
            and corpus.labels == ["x", "y"]
        )


def test_unlabelled_jsonl_has_no_labels(tmp_path: Path) -> None:
    corpus = load_jsonl(write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "t"}]))
    assert corpus.labels is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"id": "x"}', "'text' must be a string"),
        ('{"id": 3, "text": "t"}', "'id' must be a string"),
        ('{"id": "x", "text": "t", "label": 5}', "'label' must be a string"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "ok", "text": "fine"}) + "\n\n" + line + "\n")
    with pytest.raises(CorpusError, match=rf"bad\.jsonl, line 3: .*{message}"):
        load_jsonl(path)


def test_other_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CorpusError, match="no documents"):
        load_jsonl(tmp_path / "empty.jsonl")
    dup = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    with pytest.raises(CorpusError, match="not unique"):
        load_jsonl(write_jsonl(tmp_path / "dup.jsonl", dup))
    mixed = [{"id": "a", "text": "x", "label": "l"}, {"id": "b", "text": "y"}]
    with pytest.raises(CorpusError, match="some documents have a label"):
        load_jsonl(write_jsonl(tmp_path / "mixed.jsonl", mixed))
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match="broken.jsonl.gz: cannot read"):
        load_jsonl(tmp_path / "broken.jsonl.gz")
    with pytest.raises(CorpusError, match="neither '20news' nor an existing path"):
        load_corpus(tmp_path / "nothing-here")


def test_text_folder_labels_by_parent(tmp_path: Path) -> None:
    for label, name, text in (("space", "1.txt", "rockets"), ("cars", "2.txt", "engines")):
        (tmp_path / label).mkdir()
        (tmp_path / label / name).write_text(text)
    corpus = load_text_folder(tmp_path)
    assert corpus.ids == ["cars/2.txt", "space/1.txt"] and corpus.labels == ["cars", "space"]
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.txt").write_text("x")
    assert load_text_folder(flat).labels is None
    with pytest.raises(CorpusError, match="no .txt files"):
        load_text_folder(tmp_path / "nowhere")


def test_load_corpus_resolves_split_folders(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl.gz", [{"id": "a", "text": "x", "label": "l"}], compress=True)
    write_jsonl(tmp_path / "test.jsonl", [{"id": "b", "text": "y", "label": "l"}])
    assert load_corpus(tmp_path, "train").ids == ["a"]
    assert load_corpus(tmp_path, "test").ids == ["b"]
    assert load_corpus(str(tmp_path / "test.jsonl")).ids == ["b"]


def test_20news_env_var_must_point_at_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMHASH_20NEWS_DIR", str(tmp_path))
    with pytest.raises(CorpusError, match="SEMHASH_20NEWS_DIR"):
        load_corpus("20news")
    write_jsonl(tmp_path / "test.jsonl", [{"id": "q", "text": "y", "label": "l"}])
    write_jsonl(tmp_path / "train.jsonl", [{"id": "d", "text": "x", "label": "l"}])
    assert load_corpus("20news", "test").ids == ["q"]


def test_synthetic_corpus_is_seeded_and_labelled() -> None:
    a, b = synthetic_topic_corpus(30, seed=3), synthetic_topic_corpus(30, seed=3)
    assert a.texts == b.texts and a.labels is not None and len(set(a.labels)) > 1


def test_stream_reads_lazily_and_counts_what_is_cheap(tmp_path: Path) -> None:
    records = [{"id": str(i), "text": f"text {i}"} for i in range(5)]
    plain = write_jsonl(tmp_path / "c.jsonl", records)
    plain.write_text(plain.read_text() + "\n{not json\n", encoding="utf-8")  # a bad last line
    stream, total = stream_corpus(plain)
    assert total == 6  # non-blank lines: the bad one counts, as the job will reach it
    first = [next(stream) for _ in range(5)]  # everything before the bad line comes out
    assert [record.id for record in first] == ["0", "1", "2", "3", "4"]
    assert first[2].where == f"{plain}, line 3"
    with pytest.raises(CorpusError, match="line 7"):
        next(stream)
    _, gz_total = stream_corpus(write_jsonl(tmp_path / "c.jsonl.gz", records, compress=True))
    assert gz_total is None  # counting would decompress the file twice
    folder = tmp_path / "docs"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.txt").write_text("one", encoding="utf-8")
    (folder / "a" / "y.txt").write_text("two", encoding="utf-8")
    stream, total = stream_corpus(folder)
    assert total == 2 and [(r.id, r.label) for r in stream] == [("a/x.txt", "a"), ("a/y.txt", "a")]


def test_stream_and_load_agree(tmp_path: Path) -> None:
    records = [{"id": str(i), "text": f"text {i}", "label": "l"} for i in range(4)]
    path = write_jsonl(tmp_path / "c.jsonl.gz", records, compress=True)
    stream, _ = stream_corpus(path)
    streamed = list(stream)
    loaded = load_corpus(path)
    assert [(r.id, r.text, r.label) for r in streamed] == list(
        zip(loaded.ids, loaded.texts, loaded.labels or [], strict=True)
    )
    assert [(r.id, r.text, r.label) for r in loaded.records()] == [(r.id, r.text, r.label) for r in streamed]
    with pytest.raises(CorpusError, match="does not exist"):
        stream_corpus(tmp_path / "missing.jsonl")


def test_20news_without_a_copy_or_internet_says_where_it_looked_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import training.corpus
    from semhash_cli import app as cli

    # No local copy (a clone without ../shared), an empty scikit-learn cache, and no way out: every HTTP(S)
    # request goes to a proxy on a closed local port, so the download really fails, as offline.
    monkeypatch.setattr(training.corpus, "REPO_ROOT", tmp_path / "clone")
    monkeypatch.delenv("SEMHASH_20NEWS_DIR", raising=False)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sklearn"))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    for bypass in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(bypass, raising=False)
    result = CliRunner().invoke(cli, ["train", "text", "--corpus", "20news", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is not None
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    message = lines[0]
    assert "SEMHASH_20NEWS_DIR" in message and str(tmp_path / "shared" / "data" / "20news") in message
    assert str(tmp_path / "sklearn") in message and "internet" in message
