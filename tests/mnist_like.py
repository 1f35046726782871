"""MNIST-shaped test data from scikit-learn's 8x8 digits, and tiny digit/image bundles trained on it.

Each 8x8 digit (values 0-16) is scaled to 20x20 and padded into a 28x28 field, so the models see
MNIST's shape and value range; 1,797 images split 1,200 / 300 / 297 into train / validation / test.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from models.convnet import ConvNetArchitecture
from training.backprop import BackpropSchedule
from training.convnet import ConvNetConfig
from training.convnet_windows import WindowConfig
from training.digits import DigitsConfig
from training.images import ImagesConfig
from training.mnist import MnistSplits
from training.motor import MotorConfig
from training.pretrain import CDSchedule
from training.sparse import LISTASchedule, PSDSchedule, SparseConfig


def mnist_like() -> MnistSplits:
    digits = load_digits()
    images = np.zeros((len(digits.images), 28, 28), dtype=np.float32)
    for i, small in enumerate(digits.images):
        big = Image.fromarray((small / 16.0).astype(np.float32)).resize((20, 20), Image.Resampling.BILINEAR)
        images[i, 4:24, 4:24] = np.clip(np.asarray(big), 0.0, 1.0)
    x = images.reshape(len(images), 784)
    y = digits.target.astype(np.int64)
    return MnistSplits(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])


def tiny_digits_config() -> DigitsConfig:
    return DigitsConfig(
        layer_sizes=(784, 64, 64, 128),
        pretrain=CDSchedule(epochs=4, learning_rate=0.1, initial_momentum_epochs=1),
        top=CDSchedule(epochs=4, learning_rate=0.1, initial_momentum_epochs=1),
        top_hybrid=CDSchedule(epochs=2, learning_rate=0.01, initial_momentum_epochs=0),
        finetune=BackpropSchedule(epochs=8, learning_rate=0.1),
        refit=False,
        device="cpu",
    )


def tiny_images_config() -> ImagesConfig:
    return ImagesConfig(
        layer_sizes=(784, 64, 32, 8),
        pretrain=CDSchedule(epochs=4, learning_rate=0.1, initial_momentum_epochs=1),
        code_layer=CDSchedule(epochs=4, learning_rate=0.001, initial_momentum_epochs=1),
        finetune=BackpropSchedule(epochs=8, optimizer="adam", learning_rate=3e-3),
        device="cpu",
    )


def tiny_sparse_config() -> SparseConfig:
    return SparseConfig(
        n_atoms=48,
        lam=0.5,
        n_validation=300,
        psd=PSDSchedule(epochs=2, inference_iterations=10),
        lista=LISTASchedule(n_train=600, target_iterations=100, epochs=3, untied=True),
        fista_iterations=50,
        address_bits=8,
        device="cpu",
    )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 array as a gzipped IDX file (magic 0x0000 08 ndim, big-endian sizes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_mnist_folder(folder: Path, splits: MnistSplits) -> Path:
    """The splits as the four IDX files of an MNIST folder (train = train + validation)."""
    folder.mkdir(parents=True, exist_ok=True)
    to_bytes = lambda x: np.round(x * 255).reshape(len(x), 28, 28)  # noqa: E731
    write_idx(folder / "train-images-idx3-ubyte.gz", to_bytes(splits.full_train_x))
    write_idx(folder / "train-labels-idx1-ubyte.gz", splits.full_train_y)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", to_bytes(splits.test_x))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", splits.test_y)
    return folder


def tiny_motor_config() -> MotorConfig:
    """A motor model small enough to train in seconds (tiny nets, a few steps, 60 validation digits)."""
    return MotorConfig(
        hidden=(32,),
        steps=16,
        synthetic_batch=4,
        real_batch=4,
        warmup_steps=6,
        refresh_every=5,
        pool_size=8,
        n_class_codes=4,
        eval_every=8,
        checkpoint_every=5,
        n_validation=60,
        local_search_iterations=(3,),
        local_search_steps=(0.02,),
        local_search_priors=(0.0, 1.0),
        local_search_top_k=(2,),
        local_search_manifolds=(0.0, 0.5),
        device="cpu",
    )


def tiny_convnet_config() -> ConvNetConfig:
    return ConvNetConfig(
        architecture=ConvNetArchitecture(conv1=6, conv2=12, hidden=32, dropout=0.0),
        windows=WindowConfig(centred=0.8),  # mostly centred digits: 5 epochs of 1,200 digits learn them
        epochs=5,
        batch_size=64,
        learning_rate=3e-3,
        device="cpu",
    )
