"""Sparse bundles: training, numpy inference against torch, resume, damaged bundles, patches, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mnist_like import tiny_sparse_config, write_mnist_folder
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

import training.sparse
import training.sparse_train
from bundles.io import BundleError, weights_fingerprint, write_bundle
from bundles.sparse import SparseBundle, signature_bits
from models.sparse_coding import LISTA, fista
from semhash_cli import app
from service.loaded_models import load_sparse_bundle
from training.mnist import MnistSplits
from training.sparse import random_patches
from training.sparse_eval import first_reaching
from training.sparse_signature import SIGNATURE_ATOMS_GRID

Run = tuple[Path, dict[str, Any]]


def test_numpy_encoders_match_the_torch_models(sparse_run: Run, mnist_splits: MnistSplits) -> None:
    bundle = SparseBundle.load(sparse_run[0])
    assert bundle.bundle_id.startswith("sparse-") and (bundle.n_atoms, bundle.lista_steps) == (48, 3)
    x = mnist_splits.valid_x
    w = {k: torch.from_numpy(v) for k, v in bundle.weights.items()}
    assert bundle.lista_untied and bundle.weights["lista.S"].shape == (2, 48, 48)
    net = LISTA(784, 48, 3, nonnegative=True, untied=True)
    net.load_state_dict({"W_e": w["lista.W_e"], "S": w["lista.S"], "theta": w["lista.theta"]})
    with torch.no_grad():
        np.testing.assert_allclose(bundle.encode(x), net(torch.from_numpy(x)).numpy(), atol=1e-5)
        reference = fista(
            torch.from_numpy(x).double(),
            w["dictionary"].double(),
            bundle.lam,
            30,
            lipschitz=bundle.lipschitz,
            nonnegative=True,
        )
    np.testing.assert_allclose(bundle.encode(x, "fista", 30), reference.numpy(), atol=1e-4)
    for encoder in ("lista", "psd", "fista"):
        codes = bundle.encode(x, encoder)  # type: ignore[arg-type]
        assert codes.shape == (300, 48) and codes.dtype == np.float32 and (codes >= 0).all()
        assert 0 < (codes != 0).sum(1).mean() < 48
        one_by_one = np.concatenate([bundle.encode(x[i : i + 1], encoder) for i in range(10)])  # type: ignore[arg-type]
        np.testing.assert_allclose(one_by_one, codes[:10], atol=1e-4)  # float32 sums in another order
    with pytest.raises(ValueError, match="iterations"):
        bundle.encode(x, "fista", 0)
    with pytest.raises(ValueError, match="shape"):
        bundle.encode(np.zeros((1, 783)))


def test_format_1_bundles_with_a_tied_lista_still_load(sparse_run: Run, tmp_path: Path) -> None:
    """A bundle written before untied LISTA (one S (m, m), one theta (m,)) encodes as the tied net."""
    path = _copy(sparse_run[0], tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 1
    del config["architecture"]["lista_untied"]
    weights = dict(load_file(str(path / "weights.safetensors")))
    weights["lista.S"], weights["lista.theta"] = weights["lista.S"][-1], weights["lista.theta"][-1]
    write_bundle(path, config, weights, {})
    bundle = SparseBundle.load(path)
    assert not bundle.lista_untied
    net = LISTA(784, 48, 3, nonnegative=True)
    net.load_state_dict(
        {k.removeprefix("lista."): torch.from_numpy(v) for k, v in weights.items() if k.startswith("lista.")}
    )
    x = np.random.default_rng(0).random((20, 784), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(bundle.encode(x), net(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_training_metrics_agree_with_the_bundle(sparse_run: Run, mnist_splits: MnistSplits) -> None:
    path, metrics = sparse_run
    bundle = SparseBundle.load(path)
    codes = bundle.encode(mnist_splits.valid_x)
    recon = ((mnist_splits.valid_x - bundle.reconstruct(codes)) ** 2).sum(1).mean()
    assert recon == pytest.approx(metrics["validation"]["lista_reconstruction_error"], rel=1e-4)
    # LISTA was trained to predict the optimal codes: it ends closer to them than where it started
    lista = metrics["history"]["lista"]
    assert (
        lista[0]["epoch"] == 0
        and metrics["validation"]["lista_code_error"] < lista[0]["validation_code_error"]
    )
    psd = metrics["history"]["psd"]
    assert all(np.isfinite(r["validation_energy"]) for r in psd)


def test_search_codes(sparse_run: Run, mnist_splits: MnistSplits) -> None:
    path, metrics = sparse_run
    bundle = SparseBundle.load(path)
    # the signature's size was chosen on validation, the best of the candidates tried
    scores = metrics["signature"]["validation_precision_at_100"]
    assert set(scores) == {str(k) if k else "all" for k in SIGNATURE_ATOMS_GRID}
    chosen = bundle.signature_atoms
    assert chosen == metrics["signature"]["signature_atoms"]
    assert scores[str(chosen) if chosen else "all"] == max(scores.values())
    codes = bundle.encode(mnist_splits.train_x)
    signatures = bundle.signatures(codes)
    assert signatures.shape == (1200, 6) and signatures.dtype == np.uint8
    bits = np.unpackbits(signatures, axis=1).astype(bool)
    np.testing.assert_array_equal(bits, signature_bits(codes, chosen))
    assert not (bits & (codes == 0)).any()  # only active atoms
    if chosen is not None:
        assert (bits.sum(1) == np.minimum((codes != 0).sum(1), chosen)).all()
    addresses = bundle.addresses(codes)
    assert addresses.min() >= 0 and addresses.max() < 2**8
    assert len(np.unique(addresses)) > 8  # the address spreads the images over the table


def test_the_fingerprint_covers_the_signature_size_and_older_formats_keep_every_active_atom(
    sparse_run: Run, tmp_path: Path, mnist_splits: MnistSplits
) -> None:
    codes = SparseBundle.load(sparse_run[0]).encode(mnist_splits.valid_x)
    ids = set()
    for atoms in (3, 5):
        path = _copy(sparse_run[0], tmp_path / str(atoms))
        _edit(path, signature_atoms=atoms)
        bundle = SparseBundle.load(path)
        assert bundle.signature_atoms == atoms
        assert (np.unpackbits(bundle.signatures(codes), axis=1).sum(1) <= atoms).all()
        ids.add(bundle.bundle_id)
    path = _copy(sparse_run[0], tmp_path / "format2")
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 2
    del config["architecture"]["signature_atoms"]
    (path / "config.json").write_text(json.dumps(config))
    old = SparseBundle.load(path)
    assert old.signature_atoms is None and old.bundle_id == f"sparse-{weights_fingerprint(path)[:12]}"
    np.testing.assert_array_equal(np.unpackbits(old.signatures(codes), axis=1).astype(bool), codes != 0)
    ids.add(old.bundle_id)
    assert len(ids) == 3  # collections coded with one signature size refuse the others


def test_an_interrupted_run_resumes_to_the_same_bundle(
    sparse_run: Run,
    mnist_splits: MnistSplits,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "sparse"

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(training.sparse_train, "train_lista", killed)
        with pytest.raises(KeyboardInterrupt):
            training.sparse_train.train_sparse(tiny_sparse_config(), mnist_splits, out, progress=False)
    assert (out / "checkpoints" / "psd.pt").is_file() and (out / "checkpoints" / "targets.pt").is_file()
    with caplog.at_level("INFO", logger="training"):
        training.sparse_train.train_sparse(tiny_sparse_config(), mnist_splits, out, progress=False)
    assert "PSD: resumed after epoch 2" in caplog.text
    uninterrupted, resumed = (load_file(str(p / "weights.safetensors")) for p in (sparse_run[0], out))
    for name, array in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], array, err_msg=name)


def _copy(path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(path, tmp_path / path.name, ignore=shutil.ignore_patterns("checkpoints")))


def _edit(path: Path, **architecture: Any) -> None:
    config = json.loads((path / "config.json").read_text())
    config["architecture"].update(architecture)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _edit(p, n_atoms=64), "shape"),
        (lambda p: _edit(p, address_bits=40), "address_bits"),
        (lambda p: _edit(p, lam=-1), "lam"),
        (lambda p: _edit(p, input_shape=[28]), "input_shape"),
        (lambda p: _edit(p, fista_iterations=0), "fista_iterations"),
        (lambda p: _edit(p, signature_atoms=0), "signature_atoms"),
        (lambda p: _edit(p, signature_atoms=49), "signature_atoms"),
        (
            lambda p: (p / "config.json").write_text(json.dumps({"kind": "sparse", "format_version": 9})),
            "format_version 9",
        ),
        (lambda p: (p / "weights.safetensors").write_bytes(b"junk"), "corrupt"),
    ],
)
def test_damaged_bundles_are_refused(sparse_run: Run, tmp_path: Path, damage: Any, message: str) -> None:
    path = _copy(sparse_run[0], tmp_path)
    damage(path)
    with pytest.raises(BundleError, match=message):
        SparseBundle.load(path)


def test_patches_train_a_patch_coder_the_images_routes_refuse(
    mnist_splits: MnistSplits, tmp_path: Path
) -> None:
    patches = random_patches(mnist_splits.train_x, 12, 500, np.random.default_rng(0))
    assert patches.shape == (500, 144) and ((patches**2).sum(1) >= 1.0).all()
    config = tiny_sparse_config()
    config.patch_size, config.n_patches, config.n_atoms = 12, 1000, 32
    training.sparse_train.train_sparse(config, mnist_splits, tmp_path / "patches", progress=False)
    bundle = SparseBundle.load(tmp_path / "patches")
    assert bundle.input_shape == (12, 12) and bundle.encode(patches[:5]).shape == (5, 32)
    served, why = load_sparse_bundle(tmp_path / "patches")
    assert served is None and why is not None and "12x12 patches" in why


def test_first_reaching() -> None:
    assert first_reaching([5.0, 3.0, 2.0, 1.0], 2.5) == 3
    assert first_reaching([5.0, 3.0], 1.0) is None


def test_cli_trains_and_evaluates(
    mnist_splits: MnistSplits, images_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_mnist_folder(tmp_path / "mnist", mnist_splits)
    monkeypatch.setattr("training.mnist.N_VALIDATION", 300)
    monkeypatch.setitem(training.sparse.PROFILES, "quick", tiny_sparse_config())
    monkeypatch.setattr("training.sparse_eval.C_GRID", (1.0,))
    runner = CliRunner()
    out = tmp_path / "sparse"
    args = ["train", "sparse", "--data", str(folder), "--out", str(out), "--no-progress", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["training"]["n_atoms"] == 48
    plots, results_file = tmp_path / "plots", tmp_path / "sparse.json"
    args = [
        "evaluate",
        "sparse",
        "--bundle",
        str(out),
        "--autoencoder",
        str(images_run[0]),
        "--data",
        str(folder),
        *("--curve-images", "100", "--curve-iterations", "30", "--optimal-iterations", "200"),
    ]
    # numpy's BLAS threads only fight over a loaded CI machine for matrices this small (10x slower)
    with threadpool_limits(limits=1, user_api="blas"):
        result = runner.invoke(app, [*args, "--json", str(results_file), "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    results = json.loads(results_file.read_text())
    assert set(results["linear_test_error"]) == {"psd", "pixels", "autoencoder"}
    assert 0 <= results["linear_test_error"]["psd"] < 0.5  # the tiny autoencoder's 8-D codes may be worse
    assert {"sparse_signature", "autoencoder_binary_code"} <= set(results["retrieval_precision_at_100"])
    assert results["signature_choice"]["signature_atoms"] == results["signature_atoms"]
    curve = results["iterations"]["fista"]["reconstruction_error"]
    assert curve[-1] < curve[0]
    assert "fista_iterations_to_match_lista_k3" in results
    assert set(results["encode_ms_p50"]) == {"lista", "psd", "fista"}
    assert all(ms > 0 for ms in results["encode_ms_p50"].values())
    for name in ("sparse_dictionary", "sparse_iterations"):
        assert (plots / f"{name}.png").stat().st_size > 1000
