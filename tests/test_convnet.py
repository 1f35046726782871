"""The scanning shared-weight convnet (models/convnet.py), its training windows, strips and the reader."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mnist_like import mnist_like, tiny_convnet_config

from bundles.convnet import SCAN_BAND_ROWS, ConvNetBundle, ReaderConfig, forward, softmax
from bundles.digit_preprocess import BlankImageError
from bundles.digit_strips import StripConfig, compose_strip, make_strips, prepare_strip
from bundles.io import BundleError
from models.convnet import N_OUTPUTS, NONE, STRIDE, ConvNetArchitecture, ScanningConvNet
from training.convnet import train_convnet
from training.convnet_eval import match, read_strips
from training.convnet_windows import WindowConfig, make_windows, presence_target

SMALL = ConvNetArchitecture(conv1=6, conv2=12, hidden=32, dropout=0.0)


def test_scanning_is_the_net_applied_to_every_window() -> None:
    torch.manual_seed(0)
    net = ScanningConvNet(SMALL).eval()
    picture = torch.rand(1, 1, 36, 44)
    scanned = net(picture)[0]  # (11, 3, 5)
    assert scanned.shape == (N_OUTPUTS, 3, 5)
    for i in range(3):
        for j in range(5):
            window = picture[:, :, i * STRIDE : i * STRIDE + 28, j * STRIDE : j * STRIDE + 28]
            assert torch.allclose(net.window_logits(window)[0], scanned[:, i, j], atol=1e-5)


def test_the_numpy_reader_computes_what_the_torch_module_computes(tiny_bundle: Path) -> None:
    """Serving runs numpy (no torch in the serving image): the module's logits, banded scans included."""
    bundle = ConvNetBundle.load(tiny_bundle)
    net = ScanningConvNet(bundle.architecture).eval()
    net.load_state_dict({name: torch.from_numpy(value) for name, value in bundle.weights.items()})
    tall = 28 + STRIDE * (SCAN_BAND_ROWS + 5) + 3  # more than one band, and an odd remainder
    picture = torch.rand(1, 1, tall, 41, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = net(picture)[0]  # (11, R, C)
    got = forward(bundle.weights, picture[0].numpy())[0].transpose(2, 0, 1)
    np.testing.assert_allclose(got, logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        bundle.scan(picture[0, 0].numpy()), torch.softmax(logits, 0).numpy(), atol=1e-5
    )


def test_a_fine_scan_interleaves_the_windows_moved_half_a_step(tiny_bundle: Path) -> None:
    bundle = ConvNetBundle.load(tiny_bundle)
    picture = np.random.default_rng(3).random((36, 47)).astype(np.float32)
    coarse, fine = bundle.scan(picture), bundle.scan(picture, fine=True)
    assert coarse.shape[2] == 5 and fine.shape == (N_OUTPUTS, 3, 10)
    np.testing.assert_allclose(fine[:, :, 0::2], coarse, atol=1e-6)
    for c in range(5):  # odd columns: the windows whose left edge is at 4c + 2
        window = picture[None, 4:32, 4 * c + 2 : 4 * c + 30]
        np.testing.assert_allclose(
            fine[:, 1, 2 * c + 1], softmax(forward(bundle.weights, window)[0, 0, 0]), atol=1e-5
        )


def test_the_shared_gradient_is_the_sum_over_the_copies() -> None:
    torch.manual_seed(1)
    net = ScanningConvNet(SMALL).eval()
    picture = torch.rand(1, 1, 28, 36)  # three windows side by side
    net.zero_grad()
    net(picture)[0, 3].sum().backward()
    scanned = net.conv2.weight.grad.clone()
    summed = torch.zeros_like(scanned)
    for j in range(3):
        net.zero_grad()
        net.window_logits(picture[:, :, :, j * STRIDE : j * STRIDE + 28])[0, 3].backward()
        summed += net.conv2.weight.grad
    assert torch.allclose(scanned, summed, atol=1e-5)


def test_a_picture_smaller_than_a_window_is_refused() -> None:
    with pytest.raises(ValueError, match="H, W >= 28"):
        ScanningConvNet(SMALL)(torch.zeros(1, 1, 20, 40))


def test_windows_have_soft_presence_targets_peaking_at_centred_digits() -> None:
    data = mnist_like()
    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(data.train_x[:400])
    y = torch.from_numpy(data.train_y[:400])
    cfg = WindowConfig(context=0.0, empty=0.0, vertical=0.0, noisy=0.0)
    windows, targets = make_windows(x, y, cfg, g)
    assert windows.shape == (400, 1, 28, 28) and float(windows.min()) >= 0 and float(windows.max()) <= 1
    assert targets.shape == (400, N_OUTPUTS) and torch.allclose(targets.sum(1), torch.ones(400))
    presence = 1.0 - targets[:, NONE]
    assert bool((targets[:, :NONE].argmax(1)[presence > 0] == y[presence > 0]).all())
    # alone in its window, the digit's centre of mass sits where the target says: near the centre
    # when presence is high, far off it when presence is low
    cols = torch.arange(28.0)
    mass = windows[:, 0].sum(1)
    offset = ((mass * cols).sum(1) / mass.sum(1).clamp(min=1e-6) - 14).abs()
    inked = windows[:, 0].sum((1, 2)) > 5
    assert float(offset[inked & (presence > 0.8)].median()) < 2.0
    assert float(offset[inked & (presence < 0.05)].median()) > 5.0
    assert 0.3 < float((presence > 0.5).float().mean()) < 0.8


def test_presence_is_full_near_the_centre_and_vanishes_between_digits() -> None:
    cfg = WindowConfig()
    g = presence_target(torch.tensor([0.0, 0.0, 2.0, 8.0]), torch.tensor([0.0, cfg.band, 0.0, 0.0]), cfg)
    assert g[0] == 1.0 and g[1] == 1.0
    assert 0.5 < float(g[2]) < 0.7 and float(g[3]) < 1e-3


def test_strips_are_composed_left_to_right() -> None:
    data = mnist_like()
    strip = compose_strip(
        data.test_x, data.test_y, np.random.default_rng(0), StripConfig(noise=(0.0,), inverted=0.0)
    )
    assert 3 <= len(strip.labels) <= 8 and len(strip.boxes) == len(strip.labels)
    lefts = [b[1] for b in strip.boxes]
    assert lefts == sorted(lefts)
    h, w = strip.image.shape
    assert all(0 <= t < b <= h and 0 <= left < r <= w for t, left, b, r in strip.boxes)


def test_prepare_strip_scales_digits_to_mnist_size() -> None:
    data = mnist_like()
    for scale in (0.7, 1.5):
        config = StripConfig(scale=(scale, scale), digit_scale=0.0, noise=(0.0,), inverted=1.0)
        strip = compose_strip(data.test_x, data.test_y, np.random.default_rng(3), config)
        prepared = prepare_strip(strip.image)  # dark ink on light paper: polarity is found
        heights = [b[2] - b[0] for b in strip.boxes]
        assert prepared.digit_height == pytest.approx(np.median(heights), abs=3 * scale)
        assert prepared.image.shape[0] >= 28 + 2 * prepared.pad
    with pytest.raises(BlankImageError):
        prepare_strip(np.zeros((30, 80), dtype=np.float32))


def test_prepare_strip_keeps_a_detached_stroke_and_drops_a_far_speck() -> None:
    picture = np.zeros((40, 120), dtype=np.float32)
    picture[10:30, 20:23] = 1.0  # a tall stroke (a "1")
    picture[10:30, 50:53] = 1.0  # another, so the digits are 20 px tall
    picture[8:11, 55:62] = 1.0  # a short bar 3 px to its right: the detached top of a "5"
    picture[20:23, 100:103] = 1.0  # a speck far from every digit
    prepared = prepare_strip(picture)
    assert prepared.factor == pytest.approx(1.0, abs=0.15)

    def ink(rows: slice, cols: slice) -> float:
        f = prepared.factor
        rs = slice(round(rows.start * f) + prepared.pad, round(rows.stop * f) + prepared.pad)
        cs = slice(round(cols.start * f) + prepared.pad, round(cols.stop * f) + prepared.pad)
        return float(prepared.image[rs, cs].max())

    assert ink(slice(8, 11), slice(55, 62)) > 0.5
    assert ink(slice(18, 25), slice(98, 105)) == 0.0


@pytest.fixture(scope="module")
def tiny_bundle(convnet_run: tuple[Path, dict[str, Any]]) -> Path:
    return convnet_run[0]


def test_training_writes_a_bundle_that_recognises_digits(tiny_bundle: Path) -> None:
    bundle = ConvNetBundle.load(tiny_bundle)
    data = mnist_like()
    probs = bundle.predict_proba(data.test_x)
    assert probs.shape == (len(data.test_x), 10)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert float((probs.argmax(1) != data.test_y).mean()) < 0.5  # far better than chance
    assert bundle.metrics["validation_error"]["convnet"] < 0.5
    assert len(bundle.metrics["history"]) == tiny_convnet_config().epochs


def test_training_resumes_from_its_checkpoint(tiny_bundle: Path, tmp_path: Path) -> None:
    data = mnist_like()
    config = replace(tiny_convnet_config(), epochs=1)
    first = train_convnet(config, data, tmp_path, progress=False)
    again = train_convnet(config, data, tmp_path, progress=False)  # finished: nothing left to train
    assert again["history"] == first["history"]
    assert (tmp_path / "checkpoints" / "convnet.pt").exists()


def test_the_reader_returns_boxes_in_the_picture(tiny_bundle: Path) -> None:
    bundle = ConvNetBundle.load(tiny_bundle)
    data = mnist_like()
    strips = make_strips(data.test_x, data.test_y, 5, seed=0)
    readers = [ReaderConfig(0.3, 6.0, refine=0), ReaderConfig(0.3, 6.0, refine=1, fine=True), None]
    for strip, reader in zip(strips, readers * 2, strict=False):
        reading = bundle.read(strip.image, reader)
        assert reading.text == "".join(str(d.digit) for d in reading.digits)
        h, w = strip.image.shape
        for found in reading.digits:
            top, left, bottom, right = found.box
            assert 0 <= top < bottom <= h and 0 <= left < right <= w
            assert 0 <= found.probability <= 1 and 0 <= found.presence <= 1
        assert 0 <= match(reading, strip) <= len(strip.labels)
    results = read_strips(bundle, strips)
    assert 0 <= results["string_accuracy"] <= 1 and results["strip_ms_p50"] > 0


def test_a_bundle_with_wrong_shapes_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((broken / "config.json").read_text())
    config["architecture"]["hidden"] = 99
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="shape"):
        ConvNetBundle.load(broken)


def test_cli_trains_with_an_epochs_override_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from mnist_like import write_mnist_folder
    from typer.testing import CliRunner

    import training.convnet
    from semhash_cli import app

    data = mnist_like()
    folder = write_mnist_folder(tmp_path / "mnist", data)
    monkeypatch.setattr("training.mnist.N_VALIDATION", 300)
    monkeypatch.setitem(training.convnet.PROFILES, "quick", tiny_convnet_config())
    out = tmp_path / "convnet"
    args = ["train", "convnet", "--data", str(folder), "--out", str(out), "--no-progress", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["training"]["epochs"] == 1
    results_file = tmp_path / "convnet.json"
    args = ["evaluate", "convnet", "--bundle", str(out), "--data", str(folder), "--strips", "5"]
    result = CliRunner().invoke(app, [*args, "--json", str(results_file)])
    assert result.exit_code == 0, result.output
    results = json.loads(results_file.read_text())
    assert {"test_error", "string_accuracy", "digit_precision", "digit_recall", "strip_ms_p50"} <= set(
        results
    )
