"""Moving MNIST generation, the predictive network, its training, bundle and numpy inference (tiny)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bundles.io import BundleError, write_bundle
from bundles.predict import (
    PREDICTIVE_FORMAT_VERSION,
    SPARSE_INPUT_SHARE,
    PredictiveBundle,
    conv2d,
    relu_pool2,
    torch_weights,
)
from models.predictive import (
    Discriminator,
    FrameAutoencoder,
    PredictiveArchitecture,
    PredictiveNet,
    discriminator_loss,
    generator_loss,
)
from training.mnist import MnistSplits
from training.moving_mnist import DIGIT, MovingMnistSpec, generate, sequence_set, split_digits
from training.predict import PROFILES, load_model, train_predictive

Run = tuple[Path, dict[str, Any]]
SPEC = MovingMnistSpec()


def test_moving_mnist_is_reproducible_and_bounces(mnist_splits: MnistSplits) -> None:
    a = sequence_set(mnist_splits, "test", 6, SPEC, seed=3)
    b = sequence_set(mnist_splits, "test", 6, SPEC, seed=3)
    c = sequence_set(mnist_splits, "test", 6, SPEC, seed=4)
    assert a.frames.shape == (6, 20, 64, 64) and a.frames.dtype == np.float32
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.min() >= 0.0 and a.frames.max() <= 1.0
    # centres stay inside the field; speed is constant; velocity flips only at a wall
    half = DIGIT / 2
    assert (a.positions >= half - 1e-4).all() and (a.positions <= 64 - half + 1e-4).all()
    np.testing.assert_allclose(np.linalg.norm(a.velocities, axis=-1), SPEC.speed, rtol=1e-5)
    # test sequences use test digits only
    assert set(a.labels.ravel()) <= set(mnist_splits.test_y.tolist())


def test_frames_show_the_digits_where_the_latents_say(mnist_splits: MnistSplits) -> None:
    images, labels = split_digits(mnist_splits, "train")
    one = replace(SPEC, n_digits=1, n_frames=5)
    seqs = generate(images, labels, 4, one, np.random.default_rng(0))
    for s in range(4):
        for t in range(5):
            x, y = np.rint(seqs.positions[s, t, 0] - DIGIT / 2).astype(int)
            frame = seqs.frames[s, t]
            inside = frame[y : y + DIGIT, x : x + DIGIT].sum()
            assert inside == pytest.approx(frame.sum())
            assert inside > 0


def test_network_shapes() -> None:
    arch = PredictiveArchitecture(size=32, channels=(3, 5), n_hidden=7, kernel=3)
    net = PredictiveNet(arch)
    frames = torch.rand(2, 4, 32, 32)
    predictions, h = net(frames)
    assert predictions.shape == (2, 4, 32, 32) and h.shape == (2, 4, 7)
    assert ((predictions > 0) & (predictions < 1)).all()
    assert net.rollout(frames, 3).shape == (2, 3, 32, 32)
    ae = FrameAutoencoder(arch)
    assert ae.encode(frames[0]).shape == (4, 7) and ae(frames[0]).shape == (4, 32, 32)
    critic = Discriminator(32, hidden=(8, 4))
    d_loss = discriminator_loss(critic, frames[0], frames[1], predictions[0])
    g_loss = generator_loss(critic, frames[0], predictions[0])
    assert d_loss.ndim == 0 and torch.isfinite(d_loss) and torch.isfinite(g_loss)
    with pytest.raises(ValueError):
        PredictiveNet(PredictiveArchitecture(size=30))


def test_numpy_conv_matches_torch() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=2
    )
    np.testing.assert_allclose(conv2d(x, w, b), expected.numpy(), atol=1e-4)


def test_numpy_relu_pool_is_torchs_pool_of_relu() -> None:
    x = torch.randn(3, 4, 16, 16)
    expected = torch.nn.functional.max_pool2d(torch.relu(x), 2)
    np.testing.assert_array_equal(relu_pool2(x.numpy().copy()), expected.numpy())


def test_numpy_inference_of_the_served_architecture_matches_torch(tmp_path: Path) -> None:
    """The served shapes (64x64 frames, 16/16 channels, 5x5 kernels; fewer units to stay fast)."""
    torch.manual_seed(0)
    arch = PredictiveArchitecture(n_hidden=64)
    net = PredictiveNet(arch).eval()
    config = {"kind": "predictive", "format_version": PREDICTIVE_FORMAT_VERSION, "architecture": asdict(arch)}
    write_bundle(tmp_path, config, torch_weights(net), {})
    bundle = PredictiveBundle.load(tmp_path)
    frames = (np.random.default_rng(0).random((2, 10, 64, 64)) > 0.8).astype(np.float32)
    with torch.no_grad():
        expected = net.rollout(torch.from_numpy(frames), 3).numpy()
        states = net.states(torch.from_numpy(frames))[0].numpy()
    np.testing.assert_allclose(bundle.rollout(frames, 3), expected, atol=1e-5)
    np.testing.assert_allclose(bundle.states(frames), states, atol=1e-5)
    # the input projection reads only the rows under nonzero features: the dense product's values
    features = bundle.encode(frames[0])
    features[:, features.shape[1] // 4 :] = 0.0  # most ReLU features of a real clip are 0
    assert features.any(axis=0).mean() < SPARSE_INPUT_SHARE  # so the sparse path runs
    dense = features @ bundle._w_ih_t + bundle._b
    np.testing.assert_allclose(bundle.project(features), dense, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        bundle.project(np.ones_like(features)), np.ones_like(features) @ bundle._w_ih_t + bundle._b
    )
    # the zero initial state (None) is exactly an explicit zero state
    projected = bundle.project(bundle.encode(frames[0]))
    zeros = np.zeros((1, 64), np.float32)
    skipped = bundle._lstm(projected[:, None], None, None)
    explicit = bundle._lstm(projected[:, None], zeros, zeros)
    for a, b in zip(skipped, explicit, strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_writes_a_bundle_that_numpy_serves_like_torch(
    predictive_run: Run, mnist_splits: MnistSplits
) -> None:
    out, metrics = predictive_run
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "predictive" and config["format_version"] == 1
    assert config["architecture"]["n_hidden"] == 32 and "device" not in config
    assert metrics["steps"] == 6 and len(metrics["history"]) == 2
    assert all(np.isfinite(h["validation_mse"]) for h in metrics["history"])
    bundle = PredictiveBundle.load(out)
    net = load_model(out)
    seqs = sequence_set(mnist_splits, "test", 3, PROFILES["tiny"].data, 0)
    context = seqs.frames[:, :5]
    with torch.no_grad():
        expected = net.rollout(torch.from_numpy(context), 4).numpy()
        states = net.states(torch.from_numpy(context))[0].numpy()
    np.testing.assert_allclose(bundle.rollout(context, 4), expected, atol=1e-5)
    np.testing.assert_allclose(bundle.states(context), states, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        bundle.rollout(context[:, :, :16], 1)


def test_training_resumes_from_its_checkpoint(tmp_path: Path, mnist_splits: MnistSplits) -> None:
    config = replace(PROFILES["tiny"], steps=3, device="cpu")
    first = train_predictive(config, mnist_splits, tmp_path / "b", progress=False)
    longer = replace(config, steps=6)
    # a different step count is a different run: it starts over, from its own checkpoint afterwards
    resumed = train_predictive(longer, mnist_splits, tmp_path / "b", progress=False)
    again = train_predictive(longer, mnist_splits, tmp_path / "b", progress=False)
    assert first["steps"] == 3 and resumed["steps"] == 6
    assert again["history"] == resumed["history"]  # nothing retrained: the checkpoint was complete


def test_autoencoder_and_adversarial_variants_train(tmp_path: Path, mnist_splits: MnistSplits) -> None:
    tiny = replace(PROFILES["tiny"], steps=2, validate_every=2, device="cpu")
    ae = train_predictive(
        replace(tiny, objective="reconstruct"), mnist_splits, tmp_path / "ae", progress=False
    )
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["kind"] == "frame_autoencoder"
    assert isinstance(load_model(tmp_path / "ae"), FrameAutoencoder) and np.isfinite(ae["validation_mse"])
    with pytest.raises(BundleError, match="not 'predictive'"):
        PredictiveBundle.load(tmp_path / "ae")
    adv = train_predictive(
        replace(tiny, adversarial_weight=0.1), mnist_splits, tmp_path / "adv", progress=False
    )
    assert np.isfinite(adv["validation_mse"])


def test_bundle_refuses_other_versions_and_shapes(predictive_run: Run, tmp_path: Path) -> None:
    source, _ = predictive_run
    for name in ("config.json", "weights.safetensors", "metrics.json"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99"):
        PredictiveBundle.load(tmp_path)
    bigger = {**config, "architecture": {**config["architecture"], "n_hidden": 33}}
    (tmp_path / "config.json").write_text(json.dumps(bigger))
    with pytest.raises(BundleError, match="shape"):
        PredictiveBundle.load(tmp_path)
    broken = {**config, "architecture": {**config["architecture"], "size": 30}}
    (tmp_path / "config.json").write_text(json.dumps(broken))
    with pytest.raises(BundleError, match="divisible by 4"):
        PredictiveBundle.load(tmp_path)


def test_cli_trains_the_tiny_profile(
    mnist_splits: MnistSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_like import write_mnist_folder
    from typer.testing import CliRunner

    from semhash_cli import app

    folder = write_mnist_folder(tmp_path / "mnist", mnist_splits)
    monkeypatch.setattr("training.mnist.N_VALIDATION", 300)
    out = tmp_path / "predictive"
    args = ["train", "predictive", "--profile", "tiny", "--data", str(folder), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress", "--device", "cpu", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{") :])["steps"] == 3
    assert PredictiveBundle.load(out).n_hidden == 32
    result = CliRunner().invoke(app, ["train", "predictive", "--profile", "nope", "--out", str(out)])
    assert result.exit_code != 0 and "profile must be one of" in result.output


def test_evaluation_scores_model_baselines_and_probes(
    predictive_run: Run, mnist_splits: MnistSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_like import write_mnist_folder
    from typer.testing import CliRunner

    from semhash_cli import app

    ae = tmp_path / "ae"
    tiny = replace(PROFILES["tiny"], steps=2, validate_every=2, device="cpu", objective="reconstruct")
    train_predictive(tiny, mnist_splits, ae, progress=False)
    folder = write_mnist_folder(tmp_path / "mnist", mnist_splits)
    monkeypatch.setattr("training.mnist.N_VALIDATION", 300)
    out = tmp_path / "eval.json"
    args = ["evaluate", "predictive", "--bundle", str(predictive_run[0]), "--autoencoder", str(ae)]
    args += ["--data", str(folder), "--n-test", "40", "--probe-train", "60", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    for k in (1, 5):
        for name in ("model", "copy_last", "linear"):
            assert 0 <= results[f"mse.{name}.{k}"] < 1 and -1 <= results[f"ssim.{name}.{k}"] <= 1
    for rep in ("predictive", "autoencoder", "pixels"):
        assert 0 <= results[f"probe.identity_accuracy.{rep}"] <= 1
        assert results[f"probe.position_r2.{rep}"] <= 1
    assert (tmp_path / "plots" / "predictive_rows.png").stat().st_size > 1000


def test_ssim_is_one_for_equal_images_and_lower_otherwise() -> None:
    from training.predict_eval import ssim

    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 16))
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-9)
    assert (ssim(a, rng.random((2, 16, 16))) < 0.5).all()
