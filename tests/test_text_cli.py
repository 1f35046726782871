"""End to end through the CLI: `semhash train text` then `semhash evaluate text` on a generated corpus."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bundles.text import TextBundle
from semhash_cli import app
from training.corpus import synthetic_topic_corpus


def write_split(folder: Path, split: str, n: int, seed: int) -> None:
    corpus = synthetic_topic_corpus(n, seed=seed)
    lines = (
        json.dumps({"id": i, "text": t, "label": label})
        for i, t, label in zip(corpus.ids, corpus.texts, corpus.labels or [], strict=True)
    )
    (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_train_and_evaluate_text(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_split(corpus, "train", 300, seed=0)
    write_split(corpus, "test", 80, seed=1)
    out = tmp_path / "bundle"
    runner = CliRunner()
    trained = runner.invoke(
        app,
        ["train", "text", "--corpus", str(corpus), "--out", str(out), "--profile", "tiny"]
        + ["--address-bits", "8", "--long-bits", "16", "--seed", "1", "--no-progress"],
    )
    assert trained.exit_code == 0, trained.output
    bundle = TextBundle.load(out)
    assert bundle.config["seed"] == 1 and (out / "checkpoints").is_dir()

    results_file, plots = tmp_path / "eval.json", tmp_path / "plots"
    evaluated = runner.invoke(
        app,
        ["evaluate", "text", "--bundle", str(out), "--corpus", str(corpus)]
        + ["--json", str(results_file), "--plots", str(plots), "--bits", "8,16"],
    )
    assert evaluated.exit_code == 0, evaluated.output
    results = json.loads(results_file.read_text())
    precision = results["precision_at_100"]
    assert set(precision["semantic_hashing"]) == {"8", "16"} and set(precision["lsh"]) == {"8", "16"}
    assert precision["semantic_hashing"]["16"] > 0.5  # 4 balanced topics: chance is about 0.25
    balls, capped = results["address_shortlist"][:5], results["address_shortlist"][5]
    assert [row["radius"] for row in balls] == [0, 1, 2, 3, 4]
    sizes = [row["mean_size"] for row in balls]
    assert sizes == sorted(sizes)  # a larger ball holds at least as much
    assert (capped["radius"], capped["cap_fraction"]) == (3, 0.02)
    assert capped["fraction_touched"] <= min(0.02, balls[3]["fraction_touched"])
    assert results["address_r3_capped_fraction_touched"] == capped["fraction_touched"]
    assert 0 <= results["bimodal_fraction"]["16"] <= 1 and results["dead_bits"]["16"] >= 0
    assert (plots / "pr_curves.png").stat().st_size > 0 and (plots / "code_map.png").stat().st_size > 0


def test_cli_names_the_bad_line_and_refuses_bad_bundles(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    runner = CliRunner()
    result = runner.invoke(app, ["train", "text", "--corpus", str(bad), "--out", str(tmp_path / "b")])
    assert result.exit_code != 0 and "bad.jsonl, line 2" in result.output
    result = runner.invoke(app, ["evaluate", "text", "--bundle", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "does not exist" in result.output
