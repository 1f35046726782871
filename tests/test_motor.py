"""The motor model: codes and noise, the stacked nets in numpy and torch, training, resuming, the bundle."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mnist_like import tiny_motor_config

import training.motor as motor_training
from bundles.io import WEIGHTS, BundleError
from bundles.motor import MotorBundle
from models.motor import ClassNets
from models.motor_codes import NoiseConfig, perturb_codes, stack_forward
from models.motor_renderer import N_STIFFNESS, PROGRAM_SIZE, render, to_pixels
from training.mnist import MnistSplits
from training.motor import prototype_codes, train_motor
from training.motor_prototypes import prototype_programs

Run = tuple[Path, dict[str, Any]]


def test_prototypes_draw_inside_the_field() -> None:
    drawing = render(prototype_programs())
    pixels = to_pixels(drawing.trajectory, motor_training.RendererConfig())
    assert pixels.min() > 1.0 and pixels.max() < 26.0
    assert (drawing.images.sum(axis=1) > 40).all()  # every prototype lays down a real stroke


def test_code_noise_is_the_same_math_in_numpy_and_torch() -> None:
    codes = prototype_codes(3).numpy().astype(np.float64)
    draws = iter(np.random.default_rng(0).standard_normal(10_000))

    def normal(shape: tuple[int, ...]) -> np.ndarray:
        return np.array([next(draws) for _ in range(int(np.prod(shape)))]).reshape(shape)

    made = [normal(s) for s in [(3,)] * 4 + [(3, 1, 2), (3, 17, 2), (3, 34), (3, 2)]]
    replay = iter(made)
    noisy = perturb_codes(codes, NoiseConfig(), lambda shape: next(replay))
    replay = iter(made)
    noisy_torch = perturb_codes(
        torch.from_numpy(codes), NoiseConfig(), lambda s: torch.from_numpy(next(replay))
    )
    np.testing.assert_allclose(noisy_torch.numpy(), noisy, atol=1e-12)
    assert np.abs(noisy - codes).max() > 0.01
    np.testing.assert_allclose(perturb_codes(codes, NoiseConfig().scaled(0.0), normal), codes, atol=1e-12)


def test_stacked_nets_agree_in_numpy_and_torch() -> None:
    torch.manual_seed(0)
    nets = ClassNets(3, (5, 4, 2))
    x = torch.randn(3, 6, 5)
    weights = [(w.detach().numpy(), b.detach().numpy()) for w, b in nets.layers()]
    for sigmoid in (False, True):
        np.testing.assert_allclose(
            stack_forward(x.numpy(), weights, sigmoid_output=sigmoid),
            nets(x, sigmoid_output=sigmoid).detach().numpy(),
            atol=1e-6,
        )
    # class c's net only sees its own rows
    y = nets(x).detach()
    x[1] += 1.0
    np.testing.assert_allclose(nets(x).detach()[[0, 2]], y[[0, 2]])


def test_sigmoid_output_has_finite_gradients_at_extreme_logits() -> None:
    # 1 / (1 + exp(-x)) overflows below x = -88 in float32 and its gradient is inf / inf = NaN: a full
    # training's generative nets once went NaN that way (step ~4,500 of 6,000).
    logits = torch.tensor([[[-500.0, -90.0, -20.0, 0.0, 20.0, 90.0, 500.0]]], requires_grad=True)
    layer = [(torch.eye(7)[None], torch.zeros(1, 1, 7))]
    out = stack_forward(logits, layer, sigmoid_output=True)
    out.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert torch.allclose(out, torch.sigmoid(logits), atol=1e-6)
    with np.errstate(over="raise"):  # the numpy (serving) path neither overflows nor warns
        served = stack_forward(
            logits.detach().numpy(), [(w.numpy(), b.numpy()) for w, b in layer], sigmoid_output=True
        )
    np.testing.assert_allclose(served, torch.sigmoid(logits).detach().numpy(), atol=1e-6)


def test_code_gradient_is_the_generative_nets_vector_jacobian_product(motor_run: Run) -> None:
    bundle = MotorBundle.load(motor_run[0])
    rng = np.random.default_rng(1)
    codes = (bundle.prototypes[:, None, :] + rng.normal(0, 0.05, (10, 3, PROGRAM_SIZE))).astype(np.float32)
    residual = rng.normal(0, 0.3, (10, 3, 784)).astype(np.float32)
    z = torch.from_numpy((codes - bundle.prototypes[:, None, :]) / bundle.scale).requires_grad_(True)
    layers = [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in bundle.generative]
    (stack_forward(z, layers, sigmoid_output=True) * torch.from_numpy(residual)).sum().backward()
    assert z.grad is not None
    # pairs in any order, each through its own class's net
    classes, images = np.divmod(rng.permutation(30), 3)
    np.testing.assert_allclose(
        bundle.code_gradient(codes[classes, images], residual[classes, images], classes),
        z.grad.numpy()[classes, images],
        rtol=1e-4,
        atol=1e-5,
    )


def test_tiny_training_writes_a_calibrated_bundle(motor_run: Run, mnist_splits: MnistSplits) -> None:
    out, metrics = motor_run
    config = tiny_motor_config()
    bundle = MotorBundle.load(out)
    assert bundle.kind == "motor" and bundle.bundle_id.startswith("motor-")
    assert [h["step"] for h in metrics["history"]] == [8, 16]
    # calibration tried every setting, scored by energy and (with a prior term) by pixel error, kept the best
    tried = [t["local_search"] for t in metrics["local_search_trials"]]
    assert len(tried) == 1 + 3 * 2 and asdict(bundle.local_search) in tried
    assert asdict(bundle.local_search) == metrics["local_search"] and bundle.temperature > 0
    best = min(metrics["local_search_trials"], key=lambda t: (t["error"], t["nll"]))
    assert best["local_search"] == metrics["local_search"] and best["error"] == metrics["validation_error"]
    assert 0.0 <= metrics["validation_error"] <= 1.0
    assert bundle.class_codes.shape == (10, config.n_class_codes, PROGRAM_SIZE)
    assert bundle.config["training"]["hidden"] == [32]

    images = mnist_splits.test_x[:7]
    analysis = bundle.analyse(images)
    assert analysis.codes.shape == (7, 10, PROGRAM_SIZE) and analysis.reconstructions.shape == (7, 10, 784)
    # local search keeps a step only when the real energy falls; the energy bounds the pixel error
    assert (analysis.scores <= analysis.errors_before + 1e-4).all()
    assert (analysis.errors <= analysis.scores + 1e-4).all()
    np.testing.assert_allclose(
        analysis.errors, ((analysis.reconstructions - images[:, None, :]) ** 2).sum(-1), rtol=1e-4
    )
    no_search = bundle.analyse(images, local_search=False)
    np.testing.assert_allclose(no_search.errors, analysis.errors_before)
    np.testing.assert_allclose(no_search.scores, analysis.errors_before)
    np.testing.assert_allclose(bundle.predict_proba(images).sum(axis=1), 1.0, rtol=1e-5)


def test_trace_and_sampling(motor_run: Run, mnist_splits: MnistSplits) -> None:
    bundle = MotorBundle.load(motor_run[0])
    traces = bundle.trace(mnist_splits.test_x[:2])
    for i, trace in enumerate(traces):
        assert trace.digit == int(trace.scores.argmin())
        assert (trace.program[:N_STIFFNESS] >= 0).all()  # stiffnesses as the renderer reads them
        image = trace.drawing.images[0]
        assert ((image - mnist_splits.test_x[i]) ** 2).sum() == pytest.approx(
            trace.errors[trace.digit], rel=1e-3
        )
    a, b, c = (bundle.sample_code(3, seed) for seed in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0
    exact = bundle.sample_code(3, 5, noise=0.0)
    assert any(np.allclose(exact, code) for code in bundle.class_codes[3])
    with pytest.raises(ValueError, match="digit must be in 0..9"):
        bundle.sample_code(10, 0)


def test_training_resumes_from_its_checkpoint(
    tmp_path: Path, motor_run: Run, mnist_splits: MnistSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after the step-10 checkpoint, a rerun continues from it and ends with the same weights."""
    real_step = motor_training.train_step

    def interrupted(*args: Any) -> dict[str, float]:
        if args[4] == 12:  # the step number
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(motor_training, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_motor(tiny_motor_config(), mnist_splits, tmp_path, progress=False)
    monkeypatch.setattr(motor_training, "train_step", real_step)
    metrics = train_motor(tiny_motor_config(), mnist_splits, tmp_path, progress=False)
    assert metrics["history"] == motor_run[1]["history"]
    resumed, uninterrupted = MotorBundle.load(tmp_path), MotorBundle.load(motor_run[0])
    for name, array in uninterrupted.weights.items():
        np.testing.assert_allclose(resumed.weights[name], array, err_msg=name)


def test_a_damaged_bundle_is_refused(tmp_path: Path, motor_run: Run) -> None:
    for name in ("config.json", WEIGHTS, "metrics.json"):
        (tmp_path / name).write_bytes((motor_run[0] / name).read_bytes())
    config = (tmp_path / "config.json").read_text().replace('"n_class_codes": 4', '"n_class_codes": 5')
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(BundleError, match="class_codes"):
        MotorBundle.load(tmp_path)


def test_calibrate_command_rechooses_the_local_search_of_a_bundle(
    tmp_path: Path, motor_run: Run, mnist_splits: MnistSplits
) -> None:
    from mnist_like import write_mnist_folder
    from typer.testing import CliRunner

    from semhash_cli import app

    bundle_dir = tmp_path / "motor"
    bundle_dir.mkdir()
    for name in ("config.json", WEIGHTS, "metrics.json"):
        (bundle_dir / name).write_bytes((motor_run[0] / name).read_bytes())
    folder = write_mnist_folder(tmp_path / "mnist", mnist_splits)
    args = [
        "--bundle",
        str(bundle_dir),
        "--data",
        str(folder),
        "--validation",
        "40",
        "--iterations",
        "2",
        "--steps",
        "0.02",
    ]
    result = CliRunner().invoke(
        app, ["train", "motor-calibrate", *args, "--priors", "0,3", "--top-k", "3", "--manifolds", "0"]
    )
    assert result.exit_code == 0, result.output
    bundle, original = MotorBundle.load(bundle_dir), MotorBundle.load(motor_run[0])
    assert bundle.bundle_id == original.bundle_id  # same weights, new settings
    assert bundle.local_search.iterations == 2 and bundle.local_search.top_k == 3
    assert bundle.local_search.prior in (0.0, 3.0)
    trials = json.loads((bundle_dir / "metrics.json").read_text())["local_search_trials"]
    assert len(trials) == 3 and asdict(bundle.local_search) in [t["local_search"] for t in trials]
    assert json.loads(result.output)["local_search"] == asdict(bundle.local_search)


def test_a_bundle_saved_before_the_prior_searches_without_one(tmp_path: Path, motor_run: Run) -> None:
    for name in ("config.json", WEIGHTS, "metrics.json"):
        (tmp_path / name).write_bytes((motor_run[0] / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["local_search"] = {"iterations": 4, "step": 0.02}  # what format 1 bundles saved until now
    (tmp_path / "config.json").write_text(json.dumps(config))
    search = MotorBundle.load(tmp_path).local_search
    assert (search.iterations, search.step) == (4, 0.02)
    assert (search.prior, search.top_k, search.score) == (0.0, 10, "pixel")  # unconstrained, every class


def test_manifold_term_is_the_mean_distance_to_the_nearest_class_codes(motor_run: Run) -> None:
    bundle = MotorBundle.load(motor_run[0])
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 10, 12)
    codes = (bundle.class_codes[classes, 0] + rng.normal(0, 0.05, (12, PROGRAM_SIZE))).astype(np.float32)
    distance, centre = bundle.manifold(codes, classes, 2)
    for m, c in enumerate(classes):
        z = (codes[m] - bundle.prototypes[c]) / bundle.scale
        reference = (bundle.class_codes[c] - bundle.prototypes[c]) / bundle.scale
        d2 = ((reference - z) ** 2).sum(-1)
        nearest = np.argsort(d2)[:2]
        assert distance[m] == pytest.approx(d2[nearest].mean(), rel=1e-3)
        np.testing.assert_allclose(centre[m], bundle.class_codes[c][nearest].mean(0), rtol=1e-4, atol=1e-5)


def test_class_codes_are_the_recognition_codes_of_the_first_training_digits(
    tmp_path: Path, motor_run: Run, mnist_splits: MnistSplits
) -> None:
    from training.motor_calibrate import refresh_class_codes

    for name in ("config.json", WEIGHTS, "metrics.json"):
        (tmp_path / name).write_bytes((motor_run[0] / name).read_bytes())
    before = MotorBundle.load(tmp_path)
    bundle = refresh_class_codes(tmp_path, mnist_splits.train_x, mnist_splits.train_y, 6)
    assert bundle.class_codes.shape == (10, 6, PROGRAM_SIZE) and bundle.bundle_id != before.bundle_id
    sevens = mnist_splits.train_x[mnist_splits.train_y == 7][:6]
    np.testing.assert_allclose(bundle.class_codes[7], before.recognize_codes(sevens)[7], rtol=1e-5, atol=1e-6)
    for name, array in before.weights.items():
        if name != "class_codes":
            np.testing.assert_array_equal(bundle.weights[name], array)
    with pytest.raises(ValueError, match="training digits of class"):
        refresh_class_codes(tmp_path, mnist_splits.train_x, mnist_splits.train_y, 10**6)
