"""POST /v1/images/encode: digit images to autoencoder codes (default) or sparse codes (`model=sparse`)."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bundles.sparse import MAX_FISTA_ITERATIONS, Encoder, SparseBundle
from bundles.vision import ImageBundle
from service.deps import require_read_key
from service.errors import InvalidInputError
from service.imaging import array_to_png
from service.loaded_models import LoadedModelsDep
from service.sparse_codes import SparseImageCodes, encode_sparse
from service.vision import OPENAPI_BODY, ImagesDep, get_image_bundle, get_sparse_bundle

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
    model: Literal["autoencoder"] = "autoencoder"
    data: list[ImageCode]
    count: int


def _json(codes: BaseModel) -> Response:
    """The codes, validated when they were built, serialised once here (in the worker thread that built
    them) rather than validated again by FastAPI and serialised on the event loop; the route's
    response_model still documents them."""
    return Response(codes.model_dump_json(), media_type="application/json")


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


def _autoencoder_response(bundle: ImageBundle, images: np.ndarray, reconstruct: bool) -> Response:
    data = _encode(bundle, images, reconstruct)
    return _json(ImageCodes(data=data, count=len(data)))


def _sparse_response(
    bundle: SparseBundle, images: np.ndarray, encoder: Encoder, iterations: int | None, reconstruct: bool
) -> Response:
    return _json(encode_sparse(bundle, images, encoder, iterations, reconstruct))


@router.post("/encode", openapi_extra=OPENAPI_BODY, response_model=ImageCodes | SparseImageCodes)
async def encode(
    models: LoadedModelsDep,
    images: ImagesDep,
    model: Literal["autoencoder", "sparse"] = Query(
        "autoencoder",
        description="`autoencoder`: the 30-D deep autoencoder code. `sparse`: the sparse code over the "
        "PSD dictionary's atoms (digit parts).",
    ),
    encoder: Encoder | None = Query(
        None,
        description="model=sparse only. `lista` (default): the learned K-step LISTA encoder; `psd`: the "
        "one-step PSD encoder; `fista`: `iterations` steps of FISTA on the sparse-coding energy.",
    ),
    iterations: int | None = Query(
        None,
        ge=1,
        le=MAX_FISTA_ITERATIONS,
        description="encoder=fista only: FISTA iterations (default: the bundle's).",
    ),
    reconstruct: bool = Query(
        False, description="Also return the reconstruction (base64 PNG) and its error."
    ),
) -> Response:
    """Encode one image or a batch: a PNG/JPEG upload (`file`/`files`) or JSON (`pixels`/`images`)."""
    if model == "autoencoder":
        for name, value in (("encoder", encoder), ("iterations", iterations)):
            if value is not None:
                raise InvalidInputError(f"`{name}` applies to model=sparse only", [("query", name)])
        bundle = get_image_bundle(models)
        return await run_in_threadpool(_autoencoder_response, bundle, images, reconstruct)
    chosen: Encoder = encoder or "lista"
    if iterations is not None and chosen != "fista":
        raise InvalidInputError("`iterations` applies to encoder=fista only", [("query", "iterations")])
    sparse = get_sparse_bundle(models)
    return await run_in_threadpool(_sparse_response, sparse, images, chosen, iterations, reconstruct)
