"""Session fixtures shared by the MNIST tests: generated MNIST-like data and tiny trained bundles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from mnist_like import (
    mnist_like,
    tiny_convnet_config,
    tiny_digits_config,
    tiny_images_config,
    tiny_motor_config,
    tiny_sparse_config,
)

from training.convnet import train_convnet
from training.digits import train_digits
from training.images import train_images
from training.mnist import MnistSplits
from training.motor import train_motor
from training.predict import PROFILES as PREDICT_PROFILES
from training.predict import train_predictive
from training.sparse_train import train_sparse

# The tests' models are tiny: one thread is as fast, and on a shared, loaded machine a second OpenMP
# thread that is not scheduled stalls every parallel op (measured: 32 s -> 5 s for the autoencoder tests).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_splits() -> MnistSplits:
    return mnist_like()


@pytest.fixture(scope="session")
def digits_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_splits: MnistSplits
) -> tuple[Path, dict[str, Any]]:
    """(bundle directory, training metrics) of a tiny DBN really trained on `mnist_splits`."""
    out = tmp_path_factory.mktemp("bundles") / "digits"
    return out, train_digits(tiny_digits_config(), mnist_splits, out, progress=False)


@pytest.fixture(scope="session")
def images_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_splits: MnistSplits
) -> tuple[Path, dict[str, Any]]:
    """(bundle directory, training metrics) of a tiny image autoencoder trained on `mnist_splits`."""
    out = tmp_path_factory.mktemp("bundles") / "images"
    return out, train_images(tiny_images_config(), mnist_splits, out, progress=False)


@pytest.fixture(scope="session")
def sparse_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_splits: MnistSplits
) -> tuple[Path, dict[str, Any]]:
    """(bundle directory, training metrics) of a tiny PSD + LISTA-3 sparse coder trained on `mnist_splits`."""
    out = tmp_path_factory.mktemp("bundles") / "sparse"
    return out, train_sparse(tiny_sparse_config(), mnist_splits, out, progress=False)


@pytest.fixture(scope="session")
def motor_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_splits: MnistSplits
) -> tuple[Path, dict[str, Any]]:
    """(bundle directory, training metrics) of a tiny motor model really trained on `mnist_splits`."""
    out = tmp_path_factory.mktemp("bundles") / "motor"
    return out, train_motor(tiny_motor_config(), mnist_splits, out, progress=False)


@pytest.fixture(scope="session")
def convnet_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_splits: MnistSplits
) -> tuple[Path, dict[str, Any]]:
    """(bundle directory, training metrics) of a tiny scanning convnet really trained on `mnist_splits`."""
    out = tmp_path_factory.mktemp("bundles") / "convnet"
    return out, train_convnet(tiny_convnet_config(), mnist_splits, out, progress=False)


@pytest.fixture(scope="session")
def predictive_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_splits: MnistSplits
) -> tuple[Path, dict[str, Any]]:
    """(bundle directory, training metrics) of the `tiny` predictive network trained on `mnist_splits`."""
    out = tmp_path_factory.mktemp("bundles") / "predictive"
    config = replace(PREDICT_PROFILES["tiny"], device="cpu")
    return out, train_predictive(config, mnist_splits, out, progress=False)
