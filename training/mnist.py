"""MNIST in LeCun's IDX format: locating the files, reading them, and the train/validation/test split.

The four files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-...`) are looked
for in, in order: the folder the user names (`--data DIR`), `$SEMHASH_MNIST_DIR`, and
`../shared/data/mnist` beside the repository, and `~/.cache/semhash/mnist`. Users online may pass
`download=True` (`--download`) to fetch them once from a public mirror into that cache (md5-checked);
nothing is downloaded otherwise.

The last 10,000 training images are held out for validation (model selection, early stopping); the
10,000 test images are only for final numbers.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENV_VAR = "SEMHASH_MNIST_DIR"
N_VALIDATION = 10_000
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# md5 of the published .gz files (the same list torchvision checks).
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CACHE_DIR = Path.home() / ".cache" / "semhash" / "mnist"
_IDX_DTYPES = {0x08: np.uint8}


@dataclass(frozen=True)
class MnistSplits:
    """Pixels as float32 in [0, 1], shape (n, 784); labels int64 (n,)."""

    train_x: np.ndarray  # (50000, 784) first 50,000 training images
    train_y: np.ndarray
    valid_x: np.ndarray  # (10000, 784) last 10,000 training images
    valid_y: np.ndarray
    test_x: np.ndarray  # (10000, 784) the t10k images
    test_y: np.ndarray

    @property
    def full_train_x(self) -> np.ndarray:
        """All 60,000 training images (train + validation), for the final refit and as a search database."""
        return np.concatenate([self.train_x, self.valid_x])

    @property
    def full_train_y(self) -> np.ndarray:
        return np.concatenate([self.train_y, self.valid_y])


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its stated shape.

    Format: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then that many
    big-endian uint32 sizes, then the data.
    """
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    data = np.frombuffer(raw[header:], dtype=_IDX_DTYPES[raw[2]])
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _has_mnist(folder: Path) -> bool:
    return all(_find(folder, stem) is not None for stem in FILES.values())


def default_folders() -> list[Path]:
    """Folders searched when none is given: $SEMHASH_MNIST_DIR, ../shared/data/mnist, the cache."""
    folders = [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
    repo = Path(__file__).resolve().parent.parent
    return folders + [repo.parent / "shared" / "data" / "mnist", CACHE_DIR]


def locate_mnist(data_dir: Path | str | None = None, *, download: bool = False) -> Path:
    """The folder holding the four IDX files; raises FileNotFoundError saying where it looked."""
    candidates = [Path(data_dir)] if data_dir is not None else default_folders()
    for folder in candidates:
        if _has_mnist(folder):
            return folder
    if download:
        return download_mnist(CACHE_DIR)
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"MNIST IDX files not found in {looked}. Pass --data DIR, set ${ENV_VAR}, or allow --download."
    )


def download_mnist(folder: Path) -> Path:
    """Fetch the four .gz files from a public mirror into `folder`, checking each md5."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in MD5.items():
        target = folder / name
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == md5:
            continue
        log.info("downloading %s%s", MIRROR, name)
        with urllib.request.urlopen(MIRROR + name, timeout=60) as response:  # noqa: S310 - fixed https URL
            payload = response.read()
        if hashlib.md5(payload).hexdigest() != md5:
            raise OSError(f"{name} from {MIRROR} failed its md5 check")
        target.write_bytes(payload)
    return folder


def load_mnist(data_dir: Path | str | None = None, *, download: bool = False) -> MnistSplits:
    """Load MNIST and split it: 50,000 train / 10,000 validation (the last ones) / 10,000 test."""
    folder = locate_mnist(data_dir, download=download)
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in FILES.items()}  # type: ignore[arg-type]
    pixels = {
        k: arrays[k].reshape(len(arrays[k]), -1).astype(np.float32) / 255.0 for k in FILES if "images" in k
    }
    labels = {k: arrays[k].astype(np.int64) for k in FILES if "labels" in k}
    for split in ("train", "test"):
        if pixels[f"{split}_images"].shape[1] != 784 or len(pixels[f"{split}_images"]) != len(
            labels[f"{split}_labels"]
        ):
            raise ValueError(f"MNIST {split} files in {folder} do not hold matching 28x28 images and labels")
    x, y = pixels["train_images"], labels["train_labels"]
    cut = len(x) - N_VALIDATION
    log.info(
        "MNIST from %s: %d train, %d validation, %d test",
        folder,
        cut,
        N_VALIDATION,
        len(labels["test_labels"]),
    )
    return MnistSplits(x[:cut], y[:cut], x[cut:], y[cut:], pixels["test_images"], labels["test_labels"])
