"""MNIST bundles: numpy inference agrees with training, loading refuses bad bundles; IDX files; CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mnist_like import tiny_digits_config, tiny_images_config, write_mnist_folder
from typer.testing import CliRunner

import training.digits
import training.images
from bundles.io import BundleError
from bundles.vision import DigitBundle, ImageBundle
from semhash_cli import app
from training.mnist import MnistSplits, load_mnist, locate_mnist, read_idx
from training.vision_eval import evaluate_digits, evaluate_images, hamming_hits_at_k

Run = tuple[Path, dict[str, Any]]


def test_digit_bundle_numpy_inference_matches_training(digits_run: Run, mnist_splits: MnistSplits) -> None:
    path, metrics = digits_run
    bundle = DigitBundle.load(path)
    assert bundle.bundle_id.startswith("digits-") and bundle.default_variant in ("finetuned", "generative")
    for variant in ("finetuned", "generative"):
        probs = bundle.predict_proba(mnist_splits.valid_x, variant)
        assert probs.shape == (300, 10)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
        error = float((probs.argmax(1) != mnist_splits.valid_y).mean())
        assert abs(error - metrics["validation_error"][variant]) <= 2 / 300  # float32 ties at most
    with pytest.raises(ValueError, match="shape"):
        bundle.predict_proba(np.zeros((2, 783)))


def test_image_bundle_numpy_inference_matches_training(images_run: Run, mnist_splits: MnistSplits) -> None:
    path, metrics = images_run
    bundle = ImageBundle.load(path)
    codes = bundle.encode(mnist_splits.valid_x)
    assert codes.shape == (300, 8)
    recon = bundle.reconstruct(codes)
    assert recon.shape == (300, 784) and recon.min() >= 0 and recon.max() <= 1
    mse = float(((recon - mnist_splits.valid_x) ** 2).sum(1).mean())
    assert mse == pytest.approx(metrics["validation_mse"]["autoencoder"], rel=1e-4)
    bits = bundle.binary_codes(mnist_splits.train_x)
    assert set(np.unique(bits)) == {0, 1}
    np.testing.assert_allclose(bits.mean(0), 0.5, atol=0.01)  # median thresholds split the training set


def _copy(path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(path, tmp_path / path.name))


def _edit_config(path: Path, **changes: Any) -> None:
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        target = config
        *parents, leaf = key.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _edit_config(p, format_version=99), "format_version 99"),
        (lambda p: _edit_config(p, kind="images"), "holds a 'images' bundle"),
        (lambda p: _edit_config(p, architecture__layer_sizes=[784, 64, 64, 256]), "shape"),
        (lambda p: _edit_config(p, architecture__layer_sizes="big"), "layer_sizes"),
        (lambda p: _edit_config(p, architecture__top_hidden=None), "top_hidden"),
        (lambda p: _edit_config(p, architecture=[1, 2]), "no architecture"),
        (
            lambda p: (p / "weights.safetensors").write_bytes(
                (p / "weights.safetensors").read_bytes()[:1000]
            ),
            "corrupt",
        ),
        (lambda p: (p / "weights.safetensors").unlink(), "missing"),
        (lambda p: (p / "config.json").write_text("{not json"), "not valid JSON"),
    ],
)
def test_digit_bundle_refuses_damaged_bundles(
    digits_run: Run, tmp_path: Path, damage: Any, message: str
) -> None:
    path = _copy(digits_run[0], tmp_path)
    damage(path)
    with pytest.raises(BundleError, match=message):
        DigitBundle.load(path)


def test_bundles_refuse_the_other_kind_and_missing_dirs(
    digits_run: Run, images_run: Run, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="not 'images'"):
        ImageBundle.load(digits_run[0])
    with pytest.raises(BundleError, match="not 'digits'"):
        DigitBundle.load(images_run[0])
    with pytest.raises(BundleError, match="does not exist"):
        DigitBundle.load(tmp_path / "nowhere")


def test_evaluations_write_numbers_and_plots(
    digits_run: Run, images_run: Run, mnist_splits: MnistSplits, tmp_path: Path
) -> None:
    digits = evaluate_digits(digits_run[0], mnist_splits, tmp_path)
    assert set(digits["test_error"]) == {"finetuned", "generative"}
    assert np.asarray(digits["confusion_matrix"]).sum() == len(mnist_splits.test_y)
    images = evaluate_images(images_run[0], mnist_splits, tmp_path)
    assert 0 < images["reconstruction_mse"]["autoencoder"] and 0 < images["reconstruction_mse"]["pca"]
    assert 0.1 < images["precision_at_100"]["binary_code"] <= 1.0
    for name in ("digits_confusion", "digits_worst", "images_reconstructions", "images_code_map"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_hamming_precision_counts_same_label_neighbours() -> None:
    db = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1], [1, 1, 0]], dtype=np.uint8)
    db_y = np.array([0, 0, 1, 1])
    hits = hamming_hits_at_k(
        np.array([[0, 0, 0], [1, 1, 1]], dtype=np.uint8), np.array([0, 0]), db, db_y, k=2
    )
    np.testing.assert_allclose(hits, [1.0, 0.0])


def test_idx_round_trip_and_split(
    mnist_splits: MnistSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_mnist_folder(tmp_path / "mnist", mnist_splits)
    assert read_idx(folder / "t10k-labels-idx1-ubyte.gz").tolist() == mnist_splits.test_y.tolist()
    monkeypatch.setattr("training.mnist.N_VALIDATION", 300)
    loaded = load_mnist(folder)
    np.testing.assert_allclose(loaded.valid_x, mnist_splits.valid_x, atol=0.5 / 255)
    assert loaded.train_y.tolist() == mnist_splits.train_y.tolist()
    monkeypatch.setenv("SEMHASH_MNIST_DIR", str(folder))
    assert locate_mnist() == folder
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="--data DIR"):
        locate_mnist(tmp_path / "empty")


def test_cli_trains_and_evaluates_quick_bundles(
    mnist_splits: MnistSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_mnist_folder(tmp_path / "mnist", mnist_splits)
    monkeypatch.setattr("training.mnist.N_VALIDATION", 300)
    # the command-line plumbing, not the profiles' sizes, is under test here
    monkeypatch.setitem(training.digits.PROFILES, "quick", tiny_digits_config())
    monkeypatch.setitem(training.images.PROFILES, "quick", tiny_images_config())
    runner = CliRunner()
    for kind in ("digits", "images"):
        out = tmp_path / kind
        result = runner.invoke(
            app, ["train", kind, "--data", str(folder), "--out", str(out), "--no-progress", "--device", "cpu"]
        )
        assert result.exit_code == 0, result.output
        result = runner.invoke(
            app,
            [
                "evaluate",
                kind,
                "--bundle",
                str(out),
                "--data",
                str(folder),
                "--json",
                str(tmp_path / f"{kind}.json"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / f"{kind}.json").read_text())["bundle_id"].startswith(kind)
