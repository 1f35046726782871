"""The query encoder: short samples, distillation training on a tiny mail-like corpus, bundle format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bundles.query import QUERY_VOCABULARY, QUERY_WEIGHTS, query_features
from bundles.text import BundleError, TextBundle
from bundles.text_features import WordIndex
from models.query_encoder import QueryEncoderNet
from training.corpus import Corpus, synthetic_topic_corpus
from training.query_samples import (
    SampleMix,
    ShortSampler,
    body_sentences,
    document_words,
    fit_query_vocabulary,
    split_headers,
    subject_line,
)
from training.query_train import QueryProfile, train_query_encoder
from training.text_train import train_text_bundle

ADDRESS_BITS, LONG_BITS = 8, 16
TINY_QUERY = QueryProfile(
    vocab_size=400, hidden=(32,), samples_per_document=4, epochs=6, batch_size=32, learning_rate=3e-3,
    patience=6, validation_fraction=0.2,
)  # fmt: skip


def mail_corpus(n: int, seed: int = 0) -> Corpus:
    """Synthetic topic documents dressed as news posts: a subject of 3 topic words, sentences of 8."""
    plain = synthetic_topic_corpus(n, seed=seed)
    texts = []
    for i, text in enumerate(plain.texts):
        words = text.split()
        sentences = ". ".join(" ".join(words[j : j + 8]) for j in range(0, len(words), 8))
        prefix = "Re: " if i % 3 == 0 else ""
        texts.append(f"Subject: {prefix}{' '.join(words[:3])}\nLines: 5\n\n{sentences}.\n")
    return Corpus(plain.ids, texts, plain.labels, f"mail:{n}:{seed}")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return mail_corpus(300)


@pytest.fixture(scope="module")
def document_bundle(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Path:
    out = tmp_path_factory.mktemp("query") / "news"
    train_text_bundle(corpus, out, profile="tiny", address_bits=ADDRESS_BITS, long_bits=LONG_BITS)
    return out


@pytest.fixture(scope="module")
def bundle(document_bundle: Path, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> TextBundle:
    out = tmp_path_factory.mktemp("query") / "with_query"
    shutil.copytree(document_bundle, out, ignore=shutil.ignore_patterns("checkpoints"))
    return train_query_encoder(TextBundle.load(out), corpus, TINY_QUERY, checkpoint_dir=out / "checkpoints")


def test_headers_subjects_and_sentences() -> None:
    text = "From: a@b.c\nSubject: Re: RE: Clipper chip\nLines: 3\n\nFirst one. Second one!\n\n> quoted"
    assert split_headers(text)[0] == ["From: a@b.c", "Subject: Re: RE: Clipper chip", "Lines: 3"]
    assert subject_line(text) == "Clipper chip"
    assert body_sentences(text) == ["First one.", "Second one!", "> quoted"]
    assert subject_line("no headers here\nSubject: x") is None
    assert split_headers("plain text") == ([], "plain text")


def test_query_vocabulary_is_by_document_frequency() -> None:
    texts = ["alpha alpha alpha beta", "beta gamma", "beta gamma delta", "the of and"]
    words, idf = fit_query_vocabulary(texts, 2)
    assert words == ["beta", "gamma"]  # df 3 and 2; alpha has more counts but df 1; stop words out
    np.testing.assert_allclose(idf, np.log(5 / np.array([4, 3])) + 1)


def test_sampler_draws_short_samples_of_the_document(corpus: Corpus) -> None:
    words, idf = fit_query_vocabulary(corpus.texts, 300)
    index = WordIndex(words)
    prepared = document_words(corpus.texts, index, idf, 2)
    mix = SampleMix(words=1, sentence=1, subject=1, min_words=2, max_words=5)
    sampler = ShortSampler(prepared, len(words), mix)
    rows = np.arange(50)
    counts, kinds = sampler.sample(rows, np.random.default_rng(0))
    assert counts.shape == (50, len(words)) and set(kinds.tolist()) == {0, 1, 2}
    full = np.zeros((50, len(words)))
    for row in rows:
        for column in index.token_columns(corpus.texts[row]):
            if column >= 0:
                full[row, column] += 1
    dense = counts.toarray()
    assert ((dense > 0) <= (full > 0)).all()  # every sampled word is a word of its document
    sizes = (dense > 0).sum(axis=1)
    assert (sizes >= 1).all() and (sizes[kinds != 2] <= 5).all()
    again, _ = sampler.sample(rows, np.random.default_rng(0))
    np.testing.assert_array_equal(again.toarray(), dense)  # seeded


def test_training_lowers_the_loss_and_keeps_the_best_epoch(bundle: TextBundle) -> None:
    metrics = bundle.metrics["query_encoder"]
    history = metrics["history"]
    assert history[0]["epoch"] == 0 and len(history) >= 3
    assert metrics["validation_loss"] == min(record["validation_loss"] for record in history)
    assert metrics["validation_loss"] < 0.9 * history[0]["validation_loss"]
    assert history[-1]["train_loss"] < history[1]["train_loss"]


def test_subject_lines_retrieve_their_topic(bundle: TextBundle) -> None:
    """4 topics: chance P@10 is 0.25; held-out subject lines through the query encoder do far better."""
    measured = bundle.metrics["query_encoder"]["subject_query"]
    assert bundle.metrics["query_encoder"]["subject_queries"] > 20
    assert measured["long_p_at_10"] > 0.6
    assert 1 <= bundle.query_encoder.short_query_max_tokens  # type: ignore[union-attr]


def test_bundle_round_trip_keeps_the_document_side(bundle: TextBundle, document_bundle: Path) -> None:
    original = TextBundle.load(document_bundle)
    loaded = TextBundle.load(bundle.path)
    assert loaded.has_query_encoder and not original.has_query_encoder
    assert loaded.config["format_version"] == 2
    # the document encoders and the fingerprint (what collections are checked against) are unchanged
    assert loaded.fingerprint == original.fingerprint and loaded.bundle_id == original.bundle_id
    texts = ["t0w1 t0w2 t0w3", "t2w4 t2w9", "t1w1 unknownword"]
    first, again = bundle.encode_query(texts, "query"), loaded.encode_query(texts, "query")
    np.testing.assert_array_equal(first.address, again.address)
    np.testing.assert_array_equal(first.long, again.long)
    assert first.address.shape == (3, ADDRESS_BITS) and first.long.shape == (3, LONG_BITS)
    assert first.encoder == "query" and first.known.all()
    assert first.addresses().dtype == np.uint64 and first.long_codes().shape == (3, LONG_BITS // 8)


def test_numpy_encoder_matches_torch(bundle: TextBundle) -> None:
    encoder = bundle.query_encoder
    assert encoder is not None
    net = QueryEncoderNet(encoder.layers, ADDRESS_BITS)
    with torch.no_grad():
        net.embedding.weight.copy_(torch.from_numpy(encoder.weights["query.layer.0.weight"]))
        net.first_bias.copy_(torch.from_numpy(encoder.weights["query.layer.0.bias"]))
        for layer, linear in enumerate(net.linears, start=1):
            linear.weight.copy_(torch.from_numpy(encoder.weights[f"query.layer.{layer}.weight"].T))
            linear.bias.copy_(torch.from_numpy(encoder.weights[f"query.layer.{layer}.bias"]))
    texts = ["t0w1 t0w2", "t3w3 t3w3 t1w0", "t2w5"]
    features = query_features(encoder.counts(texts), encoder.idf)
    indices = torch.from_numpy(features.indices.astype(np.int64))
    offsets = torch.from_numpy(features.indptr[:-1].astype(np.int64))
    logits = net(indices, offsets, torch.from_numpy(features.data)).detach().numpy()
    np.testing.assert_allclose(encoder.logits(encoder.counts(texts)), logits, rtol=1e-4, atol=1e-5)


def test_auto_routes_short_queries_to_the_query_encoder(bundle: TextBundle) -> None:
    limit = bundle.short_query_max_tokens
    short = " ".join(["t0w1"] * (limit - 1))
    long = " ".join(["t0w1"] * limit)
    assert bundle.query_is_short(short) and not bundle.query_is_short(long)
    auto = bundle.encode_query([short, long], "auto")
    query, document = (
        bundle.encode_query([short, long], "query"),
        bundle.encode_query([short, long], "document"),
    )
    np.testing.assert_allclose(auto.long[0], query.long[0], rtol=1e-5)
    np.testing.assert_allclose(auto.long[1], document.long[1], rtol=1e-5)
    assert auto.encoder == "query" and document.encoder == "document"
    with pytest.raises(ValueError, match="encoder must be"):
        bundle.encode_query(["x"], "fast")


def test_unknown_words_are_marked_not_refused(bundle: TextBundle) -> None:
    result = bundle.encode_query(["zzzz qqqq", "t1w2"], "query")
    assert result.known.tolist() == [False, True]
    assert np.isfinite(result.address).all() and np.isfinite(result.long).all()


def edit_config(path: Path, **changes: object) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_old_bundle_without_query_encoder_loads_and_falls_back(document_bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(document_bundle, old, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((old / "config.json").read_text())
    del config["query_encoder"]
    config["format_version"] = 1  # as bundles were written before query encoders
    (old / "config.json").write_text(json.dumps(config))
    loaded = TextBundle.load(old)
    assert not loaded.has_query_encoder
    texts = ["t0w1 t0w2 t0w3", "t3w1"]
    result = loaded.encode_query(texts)
    counts = loaded.counts(texts)
    assert result.encoder == "document"
    np.testing.assert_array_equal(result.address, loaded.code_activations("address", counts))
    np.testing.assert_array_equal(result.long, loaded.code_activations("long", counts))
    np.testing.assert_array_equal(result.addresses(), loaded.encode(texts).addresses)
    np.testing.assert_array_equal(result.long_codes(), loaded.encode(texts).long_codes)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: edit_config(p, query_encoder="yes"), "must be an object or null"),
        (lambda p: (p / QUERY_WEIGHTS).unlink(), "query_encoder.safetensors is missing"),
        (lambda p: (p / QUERY_WEIGHTS).write_bytes(b"\x00" * 32), "query_encoder.safetensors is corrupt"),
        (lambda p: (p / QUERY_VOCABULARY).unlink(), "query_vocabulary.json is missing"),
        (lambda p: edit_config(p, format_version=3), "format_version 3"),
    ],
)
def test_damaged_query_encoders_are_refused(bundle: TextBundle, tmp_path: Path, damage, message: str) -> None:  # noqa: ANN001
    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy, ignore=shutil.ignore_patterns("checkpoints"))
    damage(copy)
    with pytest.raises(BundleError, match=message):
        TextBundle.load(copy)


def test_version_2_needs_the_query_encoder_key(document_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(document_bundle, copy, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((copy / "config.json").read_text())
    del config["query_encoder"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="needs 'query_encoder'"):
        TextBundle.load(copy)


def test_mismatched_code_sizes_are_refused(bundle: TextBundle, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((copy / "config.json").read_text())
    config["query_encoder"]["long_bits"] = 32
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="the document encoders have 8\\+16"):
        TextBundle.load(copy)


def test_resume_from_checkpoint_gives_the_same_encoder(
    document_bundle: Path, corpus: Corpus, bundle: TextBundle, tmp_path: Path
) -> None:
    """A rerun with the finished checkpoint trains nothing more and writes the same weights."""
    copy = tmp_path / "again"
    shutil.copytree(document_bundle, copy, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(bundle.path / "checkpoints", copy / "checkpoints")
    again = train_query_encoder(
        TextBundle.load(copy), corpus, TINY_QUERY, checkpoint_dir=copy / "checkpoints"
    )
    assert again.query_encoder is not None and bundle.query_encoder is not None
    for name, array in bundle.query_encoder.weights.items():
        np.testing.assert_array_equal(again.query_encoder.weights[name], array)
    assert again.metrics["query_encoder"]["history"] == bundle.metrics["query_encoder"]["history"]
