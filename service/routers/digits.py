"""POST /v1/digits/recognize: handwritten digits (uploads or pixel arrays) to digits and probabilities."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.deps import require_read_key
from service.errors import InvalidInputError
from service.vision import OPENAPI_BODY, DigitBundleDep, DigitsDep

BLANK_INK = 0.1  # an image whose every pixel is below this has no digit to recognise

router = APIRouter(prefix="/v1/digits", tags=["digits"], dependencies=[Depends(require_read_key)])


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    probabilities: list[float] = Field(description="p(digit = 0), ..., p(digit = 9); they sum to 1.")
    variant: str = Field(description="The recogniser used: the fine-tuned or the generative DBN.")
    bundle_id: str


class DigitPredictions(BaseModel):
    data: list[DigitPrediction]
    count: int


@router.post("/recognize", openapi_extra=OPENAPI_BODY)
async def recognize(
    bundle: DigitBundleDep,  # first: without the model, answer 503 before reading the images
    images: DigitsDep,
    variant: Literal["finetuned", "generative"] | None = Query(
        None, description="Recogniser to use; the bundle's better one (by validation error) by default."
    ),
) -> DigitPredictions:
    """Recognise one digit or a batch: a PNG/JPEG upload (`file`/`files`) or JSON (`pixels`/`images`)."""
    # A blank image would still get a confident answer from the softmax; refuse it as uploads are refused.
    blank = np.flatnonzero(images.max(axis=1) < BLANK_INK)
    if blank.size:
        raise InvalidInputError(
            f"the image is blank: no digit found (every pixel is below {BLANK_INK})",
            [("body", "images", int(i)) for i in blank],
        )
    chosen = variant or bundle.default_variant
    probs = await run_in_threadpool(bundle.predict_proba, images, chosen)
    data = [
        DigitPrediction(
            digit=int(p.argmax()), probabilities=p.tolist(), variant=chosen, bundle_id=bundle.bundle_id
        )
        for p in probs
    ]
    return DigitPredictions(data=data, count=len(data))
