"""Any corpus: multi-label and unlabelled evaluation, id splits, occupancy, BM25, resumable and
time-boxed training whatever the thread count."""

from __future__ import annotations

import itertools
import json
import logging
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from semhash_cli import app
from training.corpus import Corpus, CorpusError, load_jsonl, split_by_id, synthetic_topic_corpus
from training.occupancy import occupancy
from training.retrieval import hamming_distances
from training.text_baselines import bm25_database
from training.text_train import PROFILES, prepare_data, train_text_bundle


def multi_label(corpus: Corpus) -> list[dict[str, object]]:
    """The synthetic topics as label sets: topic t and its parity group ("even"/"odd")."""
    return [
        {"id": i, "text": t, "labels": [label, "even" if int(label[-1]) % 2 == 0 else "odd"]}
        for i, t, label in zip(corpus.ids, corpus.texts, corpus.labels or [], strict=True)
    ]


def test_labels_lists_load_as_label_sets(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    rows = [{"id": "a", "text": "x y", "labels": ["p", "q", "p"]}, {"id": "b", "text": "z", "label": "q"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = load_jsonl(path)
    assert corpus.labels is None and corpus.label_sets == [("p", "q"), ("q",)]
    assert [r.labels for r in corpus.records()] == [("p", "q"), ("q",)]
    path.write_text(json.dumps({"id": "a", "text": "t", "labels": "p"}) + "\n")
    with pytest.raises(CorpusError, match="line 1: field 'labels' must be a list of strings"):
        load_jsonl(path)
    path.write_text(json.dumps({"id": "a", "text": "t", "label": "p", "labels": ["p"]}) + "\n")
    with pytest.raises(CorpusError, match="not both"):
        load_jsonl(path)


def test_split_by_id_depends_on_ids_only() -> None:
    corpus = synthetic_topic_corpus(400)
    train, test = split_by_id(corpus, 0.25)
    assert len(train) + len(test) == 400 and 60 < len(test) < 140
    reversed_corpus = corpus.subset(list(range(399, -1, -1)))
    assert sorted(split_by_id(reversed_corpus, 0.25)[1].ids) == sorted(test.ids)


def test_occupancy_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    bits = rng.random((300, 10)) < np.linspace(0.1, 0.5, 10)  # unbalanced bits, many shared addresses
    result = occupancy(bits)
    distance = hamming_distances(bits, bits)
    for r in (1, 2, 3):
        assert result["mean_ball_fraction"][str(r)] == pytest.approx((distance <= r).mean())
    addresses = {tuple(row) for row in bits.tolist()}
    assert result["distinct_addresses"] == len(addresses)
    assert result["bit_balance_min"] == pytest.approx(min(np.minimum(bits.mean(0), 1 - bits.mean(0))))
    corr = np.corrcoef(bits.T.astype(float))
    assert result["bit_correlation_max_abs"] == pytest.approx(
        max(abs(corr[i, j]) for i, j in combinations(range(10), 2))
    )


def test_bm25_weights_follow_the_formula() -> None:
    counts = sp.csr_matrix(np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    got = bm25_database(counts, k1=1.2, b=0.75).toarray()
    lengths, df = counts.sum(axis=1).A1, np.array([2, 1, 2])
    idf = np.log1p((3 - df + 0.5) / (df + 0.5))
    tf = counts.toarray()
    expected = idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * lengths[:, None] / lengths.mean()))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_checkpoints_resume_across_thread_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = synthetic_topic_corpus(200)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = prepare_data(corpus, PROFILES["tiny"], seed=0)
        train_text_bundle(corpus, tmp_path / "b", profile="tiny", address_bits=8, long_bits=16)
        torch.set_num_threads(2)
        assert prepare_data(corpus, PROFILES["tiny"], seed=0).digest == one.digest
        with caplog.at_level(logging.INFO, logger="training.stack"):
            train_text_bundle(corpus, tmp_path / "b", profile="tiny", address_bits=8, long_bits=16)
    finally:
        torch.set_num_threads(previous)
    resumed = [r.getMessage() for r in caplog.records if "resumed from" in r.getMessage()]
    assert len(resumed) == 3  # the shared layer and both code RBMs


def test_time_budget_stops_every_phase_after_one_epoch(tmp_path: Path) -> None:
    bundle = train_text_bundle(
        synthetic_topic_corpus(200),
        tmp_path / "b",
        profile="tiny",
        address_bits=8,
        long_bits=16,
        max_minutes=1e-6,
    )
    assert [len(layer) for layer in bundle.metrics["shared_pretraining"]] == [1]
    for code in ("address", "long"):
        assert len(bundle.metrics[code]["code_rbm"]) == 1 and len(bundle.metrics[code]["fine_tune"]) == 1
    assert not (tmp_path / "b" / "checkpoints" / "shared0.pt").exists()  # cut short: not resumable


def test_multi_label_and_unlabelled_corpora_train_and_evaluate(tmp_path: Path) -> None:
    corpus = synthetic_topic_corpus(300)
    multi = tmp_path / "multi.jsonl"
    multi.write_text("".join(json.dumps(row) + "\n" for row in multi_label(corpus)))
    plain = tmp_path / "plain.jsonl"
    rows = [{"id": i, "text": t} for i, t in zip(corpus.ids, corpus.texts, strict=True)]
    plain.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runner = CliRunner()
    for source, relevance in ((multi, "shared label"), (plain, "tfidf_full top-100 neighbours")):
        out = tmp_path / f"bundle-{source.stem}"
        trained = runner.invoke(
            app,
            [
                "train",
                "text",
                "--corpus",
                str(source),
                "--out",
                str(out),
                "--profile",
                "tiny",
                "--threads",
                "1",
            ]
            + ["--address-bits", "8", "--long-bits", "16", "--test-fraction", "0.2", "--no-progress"],
        )
        assert trained.exit_code == 0, trained.output
        results_file, plots = tmp_path / f"{source.stem}.json", tmp_path / f"plots-{source.stem}"
        evaluated = runner.invoke(
            app,
            ["evaluate", "text", "--bundle", str(out), "--corpus", str(source), "--test-fraction", "0.2"]
            + ["--json", str(results_file), "--plots", str(plots), "--bits", "16", "--name", "My corpus"],
        )
        assert evaluated.exit_code == 0, evaluated.output
        results = json.loads(results_file.read_text())
        assert results["protocol"]["relevance"] == relevance
        assert 40 <= results["protocol"]["queries_size"] <= 80
        precision = results["precision_at_100"]
        assert 0 < precision["semantic_hashing"]["16"] <= 1 and 0 < precision["bm25"] <= 1
        assert results["occupancy"]["address"]["distinct_addresses"] >= 1
        assert (plots / "pr_curves.png").stat().st_size > 0
    # multi-label: a shared label is "same topic or same parity", so at least half the database
    assert precision["tfidf_full"] == pytest.approx(1.0)  # unlabelled: TF-IDF is the reference
    multi_results = json.loads((tmp_path / "multi.json").read_text())
    assert multi_results["precision_at_100"]["semantic_hashing"]["16"] > 0.6


def test_balance_penalty_is_zero_for_balanced_independent_bits_and_large_for_crowded_ones() -> None:
    from training.text_train import balance_penalty

    codes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))  # every address once
    assert float(balance_penalty(codes)) == pytest.approx(0.0, abs=1e-6)
    crowded = torch.cat([torch.zeros(12, 4), torch.ones(4, 4)])  # two addresses, identical bits
    assert float(balance_penalty(crowded)) > 1.0


def test_profiles_scale_with_the_corpus() -> None:
    full = PROFILES["full"]
    assert full.scaled(10_000) is full  # below the reference: as written
    big = full.scaled(48_000)
    assert (
        big.bottom.epochs == round(full.bottom.epochs / 4)
        and big.bottom.batch_size == 2 * full.bottom.batch_size
    )
    assert big.finetune.epochs == round(full.finetune.epochs / 4)


def test_wide_balance_weight_decorrelates_long_codes() -> None:
    """The balance penalty on a wide (32-bit) code: its fit codes end better balanced and less
    correlated than without it, from the same pretrained stack and seed."""
    from dataclasses import replace

    from training.text_train import balance_penalty, pretrain_shared, train_code_encoder

    base = replace(PROFILES["tiny"], noise_std=4.0)
    data = prepare_data(synthetic_topic_corpus(300), base, seed=0)
    shared, key, _ = pretrain_shared(data, base, checkpoint_dir=None, seed=0, progress=False)
    penalties = []
    for weight in (0.0, 8.0):
        profile = replace(base, wide_balance_weight=weight, noise_warmup_epochs=1.0)
        assert profile.balance_weight_for(32) == weight and profile.balance_weight_for(16) == 0.0
        model, report = train_code_encoder(
            shared, 32, data, profile, checkpoint_dir=None, key=key, seed=0, progress=False, name="long"
        )
        with torch.no_grad():
            penalties.append(float(balance_penalty(model.codes(data.fit).float())))
    assert penalties[1] < penalties[0]


def test_fallback_fine_tuning_runs_only_when_fine_tuning_loses_to_the_pretrained_stack() -> None:
    from dataclasses import replace

    from training.text_train import pretrain_shared, train_code_encoder, validation_score

    tiny = PROFILES["tiny"]
    data = prepare_data(synthetic_topic_corpus(300), tiny, seed=0)
    shared, key, _ = pretrain_shared(data, tiny, checkpoint_dir=None, seed=0, progress=False)
    ruinous = replace(tiny.finetune, learning_rate=30.0, patience=1)  # wrecks the pretrained stack
    profile = replace(tiny, finetune=ruinous, fallback={"finetune": tiny.finetune})
    model, report = train_code_encoder(
        shared, 32, data, profile, checkpoint_dir=None, key=key, seed=0, progress=False, name="long"
    )
    fallback = report["fallback"]
    assert fallback is not None and fallback["overrides"] == {"finetune": tiny.finetune}
    kept = (
        fallback["thresholded_validation_score"]
        if fallback["chosen"]
        else report["pretrained_validation_score"]
    )
    assert validation_score(model, data, profile) <= kept + 1e-9
    _, sane = train_code_encoder(
        shared,
        32,
        data,
        replace(profile, finetune=tiny.finetune),
        checkpoint_dir=None,
        key=key,
        seed=0,
        progress=False,
        name="long",
    )
    assert (sane["selected_epoch"] == 0) == (sane["fallback"] is not None)
