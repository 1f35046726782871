"""POST /v1/images/encode: digit images to 30-D autoencoder codes, binary codes and reconstructions."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.deps import require_read_key
from service.imaging import array_to_png
from service.vision import OPENAPI_BODY, ImageBundleDep, ImagesDep
from training.vision_bundle import ImageBundle

router = APIRouter(prefix="/v1/images", tags=["images"], dependencies=[Depends(require_read_key)])


class ImageCode(BaseModel):
    code: list[float] = Field(description="The real-valued code (30 numbers for the standard net).")
    binary_code: str = Field(description="One bit per code unit as 0/1 (1: above its training median).")
    reconstruction_png: str | None = Field(
        None, description="The decoded 28x28 image as base64 PNG (ink white)."
    )
    reconstruction_error: float | None = Field(
        None,
        description="Squared error of the reconstruction against the normalised input, summed over pixels.",
    )
    bundle_id: str


class ImageCodes(BaseModel):
    data: list[ImageCode]
    count: int


def _encode(bundle: ImageBundle, images: np.ndarray, reconstruct: bool) -> list[ImageCode]:
    codes = bundle.encode(images)
    bits = bundle.binary_codes(images)
    recon = bundle.reconstruct(codes) if reconstruct else None
    out = []
    for i in range(len(images)):
        item = ImageCode(
            code=codes[i].tolist(), binary_code="".join(map(str, bits[i])), bundle_id=bundle.bundle_id
        )
        if recon is not None:
            item.reconstruction_png = base64.b64encode(array_to_png(recon[i])).decode("ascii")
            item.reconstruction_error = float(((recon[i] - images[i]) ** 2).sum())
        out.append(item)
    return out


@router.post("/encode", openapi_extra=OPENAPI_BODY)
async def encode(
    images: ImagesDep,
    bundle: ImageBundleDep,
    reconstruct: bool = Query(
        False, description="Also return the reconstruction (base64 PNG) and its error."
    ),
) -> ImageCodes:
    """Encode one image or a batch: a PNG/JPEG upload (`file`/`files`) or JSON (`pixels`/`images`)."""
    data = await run_in_threadpool(_encode, bundle, images, reconstruct)
    return ImageCodes(data=data, count=len(data))
