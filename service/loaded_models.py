"""The model bundles a server loaded at start-up: one typed `LoadedModels` on `app.state.models`.

Every bundle is optional: the server starts with any subset, and a route whose bundle is missing answers
503 naming the model and why it was not loaded (`LoadedModels.not_loaded`). Routes read bundles through
the dependencies here and in service/deps.py and service/vision.py, never through `app.state` directly,
so a test can hand the app other models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request

from bundles.convnet import ConvNetBundle
from bundles.io import BundleError
from bundles.motor import MotorBundle
from bundles.predict import PredictiveBundle
from bundles.sparse import SparseBundle
from bundles.text import TextBundle
from bundles.vision import DigitBundle, ImageBundle
from service.errors import ModelNotLoadedError

logger = logging.getLogger(__name__)

# The kinds of model, each a folder of SEMHASH_MODELS_DIR and a field of LoadedModels, in /v1/models order.
KINDS = ("text", "digits", "images", "sparse", "motor", "convnet", "predictive")

Required = TypeVar("Required")


class Bundle(Protocol):
    """What every loaded bundle shows in /v1/models and /v1/overview."""

    @property
    def bundle_id(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def metrics(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoadedModels:
    """The bundle of each kind, or None; `errors` says why a kind is not loaded (kind -> reason)."""

    text: TextBundle | None = None
    digits: DigitBundle | None = None
    images: ImageBundle | None = None
    sparse: SparseBundle | None = None
    motor: MotorBundle | None = None
    convnet: ConvNetBundle | None = None
    predictive: PredictiveBundle | None = None
    errors: Mapping[str, str] = field(default_factory=dict)

    def served(self) -> dict[str, Bundle]:
        """The loaded bundles by kind, in KINDS order (empty when none is loaded)."""
        loaded: dict[str, Bundle | None] = {
            "text": self.text,
            "digits": self.digits,
            "images": self.images,
            "sparse": self.sparse,
            "motor": self.motor,
            "convnet": self.convnet,
            "predictive": self.predictive,
        }
        return {kind: bundle for kind, bundle in loaded.items() if bundle is not None}

    def why_not_loaded(self, kind: str) -> str:
        return self.errors.get(kind) or "none was loaded"

    def require(self, bundle: Required | None, kind: str) -> Required:
        """`bundle` (the one of `kind`), or the 503 saying why it is not loaded and how to train one."""
        if bundle is None:
            corpus = " --corpus 20news" if kind == "text" else ""
            raise ModelNotLoadedError(
                f"the {kind} model is not available ({self.why_not_loaded(kind)}); train one with "
                f"`semhash train {kind}{corpus} --out <SEMHASH_MODELS_DIR>/{kind}` and restart the server"
            )
        return bundle


NO_MODELS = LoadedModels()
B = TypeVar("B", bound=Bundle)
Loadable = TypeVar(
    "Loadable", DigitBundle, ImageBundle, MotorBundle, SparseBundle, PredictiveBundle, ConvNetBundle
)


def _load(load: Callable[[Path], B], kind: str, path: Path) -> tuple[B | None, str | None]:
    """(the bundle `load` reads at `path`, None), or (None, why it is not loaded)."""
    if not path.exists():
        return None, f"no bundle at {path}"
    try:
        bundle = load(path)
    except BundleError as err:
        logger.error("not serving %s: %s", kind, err)
        return None, str(err)
    logger.info("loaded %s", bundle.bundle_id)
    return bundle, None


def load_optional_bundle(cls: type[Loadable], path: Path) -> tuple[Loadable | None, str | None]:
    """Load a bundle the server can run without: (bundle, None), or (None, why it is not loaded)."""
    return _load(cls.load, cls.kind, path)


def load_text_bundle(path: Path) -> tuple[TextBundle | None, str | None]:
    """(the text bundle at `path`, None), or (None, why it is not loaded): the server runs without it."""
    return _load(TextBundle.load, "text", path)


def load_sparse_bundle(path: Path) -> tuple[SparseBundle | None, str | None]:
    """The sparse coder for the images routes: it must code whole 28x28 images (not patches)."""
    bundle, error = load_optional_bundle(SparseBundle, path)
    if bundle is not None and bundle.input_shape != (28, 28):
        error = (
            f"{path} codes {bundle.input_shape[0]}x{bundle.input_shape[1]} patches; the images routes need "
            "a sparse bundle trained on whole 28x28 images (`semhash train sparse --profile full`)"
        )
        logger.error("not serving sparse: %s", error)
        return None, error
    return bundle, error


def load_models(models_dir: Path, text_dir: Path) -> LoadedModels:
    """Every bundle found under `models_dir` (the text bundle at `text_dir`), with why each other is not."""
    text, text_error = load_text_bundle(text_dir)
    digits, digits_error = load_optional_bundle(DigitBundle, models_dir / "digits")
    images, images_error = load_optional_bundle(ImageBundle, models_dir / "images")
    convnet, convnet_error = load_optional_bundle(ConvNetBundle, models_dir / "convnet")
    motor, motor_error = load_optional_bundle(MotorBundle, models_dir / "motor")
    sparse, sparse_error = load_sparse_bundle(models_dir / "sparse")
    predictive, predictive_error = load_optional_bundle(PredictiveBundle, models_dir / "predictive")
    errors = {
        "text": text_error,
        "digits": digits_error,
        "images": images_error,
        "sparse": sparse_error,
        "motor": motor_error,
        "convnet": convnet_error,
        "predictive": predictive_error,
    }
    return LoadedModels(
        text=text,
        digits=digits,
        images=images,
        sparse=sparse,
        motor=motor,
        convnet=convnet,
        predictive=predictive,
        errors={kind: error for kind, error in errors.items() if error is not None},
    )


async def get_loaded_models(request: Request) -> LoadedModels:
    """The app's models; none before start-up has loaded them."""
    models: LoadedModels = getattr(request.app.state, "models", NO_MODELS)
    return models


LoadedModelsDep = Annotated[LoadedModels, Depends(get_loaded_models)]
