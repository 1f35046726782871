"""POST /v1/digits/recognize (one digit per image) and /v1/digits/read (every digit in a picture).

`recognize` runs one of the recognisers on MNIST-normalised digits: the DBN's `finetuned` or
`generative` variant (digits bundle), the scanning convnet (`convnet` bundle) or recognition by
motor programs (`motor` bundle). Without `variant`, the loaded recogniser with the lowest validation
error answers. `read` scans a whole picture (a strip of digits, a form field) with the convnet.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bundles.convnet import ConvNetBundle, Reading
from bundles.digit_preprocess import BlankImageError
from service.deps import require_read_key
from service.errors import InvalidInputError, ModelNotLoadedError
from service.vision import (
    OPENAPI_BODY,
    ConvNetBundleDep,
    DigitsDep,
    get_convnet_bundle,
    get_digit_bundle,
    get_motor_bundle,
    read_pictures,
)

BLANK_INK = 0.1  # an image whose every pixel is below this has no digit to recognise
Variant = Literal["finetuned", "generative", "convnet", "motor"]

router = APIRouter(prefix="/v1/digits", tags=["digits"], dependencies=[Depends(require_read_key)])


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    probabilities: list[float] = Field(description="p(digit = 0), ..., p(digit = 9); they sum to 1.")
    variant: str = Field(description="The recogniser used: finetuned, generative, convnet or motor.")
    bundle_id: str


class DigitPredictions(BaseModel):
    data: list[DigitPrediction]
    count: int


def _validation_errors(request: Request) -> dict[str, float]:
    """Validation error of every loaded recogniser that can be the default."""
    state, errors = request.app.state, {}
    digits = getattr(state, "digit_bundle", None)
    if digits is not None:
        measured = digits.metrics.get("validation_error", {})
        errors[digits.default_variant] = float(measured.get(digits.default_variant, 1.0))
    convnet = getattr(state, "convnet_bundle", None)
    if convnet is not None:
        errors["convnet"] = float(convnet.metrics.get("validation_error", {}).get("convnet", 1.0))
    return errors


def recogniser(
    request: Request,
    variant: Variant | None = Query(
        None,
        description="Recogniser to use; by default the loaded one with the lowest validation error "
        "(the digits bundle's better DBN variant or the convnet).",
    ),
) -> tuple[Any, str]:
    """(bundle, variant); a missing bundle answers 503 before the images are read."""
    if variant is None:
        errors = _validation_errors(request)
        if not errors:
            state = request.app.state
            why = {
                kind: getattr(state, f"{kind}_bundle_error", None) or "none was loaded"
                for kind in ("digit", "convnet")
            }
            raise ModelNotLoadedError(
                f"no digit recogniser is loaded (digits: {why['digit']}; convnet: {why['convnet']}); "
                "train one with `semhash train digits --out <SEMHASH_MODELS_DIR>/digits` or `semhash train "
                "convnet --out <SEMHASH_MODELS_DIR>/convnet` and restart the server"
            )
        variant = min(errors, key=lambda v: errors[v])
    if variant == "convnet":
        return get_convnet_bundle(request), variant
    if variant == "motor":
        return get_motor_bundle(request), variant
    return get_digit_bundle(request), variant


def _predict(bundle: Any, images: np.ndarray, variant: str) -> np.ndarray:
    if variant in ("convnet", "motor"):
        return bundle.predict_proba(images)
    return bundle.predict_proba(images, variant)


@router.post("/recognize", openapi_extra=OPENAPI_BODY)
async def recognize(
    chosen: Annotated[tuple[Any, str], Depends(recogniser)],  # first: without the model, 503 before reading
    images: DigitsDep,
) -> DigitPredictions:
    """Recognise one digit or a batch: a PNG/JPEG upload (`file`/`files`) or JSON (`pixels`/`images`)."""
    bundle, variant = chosen
    # A blank image would still get a confident answer from the softmax; refuse it as uploads are refused.
    blank = np.flatnonzero(images.max(axis=1) < BLANK_INK)
    if blank.size:
        raise InvalidInputError(
            f"the image is blank: no digit found (every pixel is below {BLANK_INK})",
            [("body", "images", int(i)) for i in blank],
        )
    probs = await run_in_threadpool(_predict, bundle, images, variant)
    data = [
        DigitPrediction(
            digit=int(p.argmax()), probabilities=p.tolist(), variant=variant, bundle_id=bundle.bundle_id
        )
        for p in probs
    ]
    return DigitPredictions(data=data, count=len(data))


class FoundDigitOut(BaseModel):
    digit: int = Field(ge=0, le=9)
    probability: float = Field(description="p(this digit | a digit is here), over the 10 digits.")
    presence: float = Field(description="1 - p(no digit is centred here): how sure the scan is of a digit.")
    box: list[int] = Field(
        description="[top, left, bottom, right] in the picture's pixels (bottom, right exclusive)."
    )


class ReadingOut(BaseModel):
    text: str = Field(description="The digits found, read left to right.")
    digits: list[FoundDigitOut]
    digit_height: float = Field(description="Estimated height of the digits in the picture, in pixels.")
    bundle_id: str


class Readings(BaseModel):
    data: list[ReadingOut]
    count: int


def _read_all(bundle: ConvNetBundle, pictures: list[np.ndarray]) -> list[Reading]:
    readings = []
    for i, gray in enumerate(pictures):
        try:
            readings.append(bundle.read(gray))
        except (BlankImageError, ValueError) as err:  # blank, or digits too small for the picture
            raise InvalidInputError(str(err), [("body", "images", i)]) from err
    return readings


@router.post("/read", openapi_extra=OPENAPI_BODY)
async def read(bundle: ConvNetBundleDep, request: Request) -> Readings:
    """Read every digit in a picture of any size (a strip of handwritten digits, a form field).

    The scanning convnet runs over the whole picture; each digit found comes with its box, class and
    probability, and `text` is the string read from left to right. Send a PNG/JPEG upload (`file` or
    `files`) or JSON (`pixels`: rows of values in [0, 1], ink = 1; `images`: several).
    """
    pictures = await read_pictures(request)
    readings = await run_in_threadpool(_read_all, bundle, pictures)
    data = [ReadingOut(**r.as_dict(), bundle_id=bundle.bundle_id) for r in readings]
    return Readings(data=data, count=len(data))
